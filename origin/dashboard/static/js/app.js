// The dashboard's entry point: sign-in, navigation and the router. Pages
// are chosen by the URL fragment (#/links, #/links/CODE, #/overview,
// #/import, #/keys); each page module exports render(main, params) and may
// return a cleanup function, called when the page is left.
import { call, getKey, setKey, clearKey, APIError } from './api.js';
import { h, replace, field, errorBox } from './dom.js';
import * as links from './links.js';
import * as linkPage from './link.js';
import * as overview from './overview.js';
import * as importPage from './import.js';
import * as keys from './keys.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let cleanup = null;
let isAdmin = false;

function signIn(message) {
  nav.hidden = true;
  const key = field('API key', h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false', required: true }));
  const err = h('div');
  const form = h('form', { class: 'card narrow', novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    const k = key.input.value.trim();
    if (!k) { key.set('Enter an API key'); return; }
    key.set('');
    setKey(k);
    try {
      await call('GET', '/v1/links?limit=1');
    } catch (x) {
      clearKey();
      replace(err, errorBox(x));
      key.input.focus();
      return;
    }
    await start();
  } }, h('h1', {}, 'Sign in'),
  h('p', {}, 'Use a linkpop API key. It is kept in this tab only (sessionStorage) and sent as the Authorization header.'),
  key.wrap, err, h('button', { type: 'submit' }, 'Sign in'));
  replace(main, form);
  if (message) replace(err, h('p', { class: 'error', role: 'alert' }, message));
  key.input.focus();
}

async function start() {
  // Admin keys may list keys; others get 403 and no Keys page.
  try { await call('GET', '/v1/keys'); isAdmin = true; } catch (_) { isAdmin = false; }
  document.getElementById('nav-keys').hidden = !isAdmin;
  nav.hidden = false;
  if (!location.hash || location.hash === '#' || location.hash === '#/') location.hash = '#/links';
  else route();
}

async function route() {
  if (!getKey()) { signIn(); return; }
  if (cleanup) { try { cleanup(); } catch (_) { /* ignore */ } cleanup = null; }
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  for (const a of nav.querySelectorAll('a')) {
    if (a.getAttribute('href') === '#/' + parts[0]) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  try {
    let r;
    switch (parts[0]) {
      case 'links': r = parts[1] ? linkPage.render(main, parts[1]) : links.render(main); break;
      case 'overview': r = overview.render(main); break;
      case 'import': r = importPage.render(main); break;
      case 'keys': r = isAdmin ? keys.render(main) : (replace(main, h('p', {}, 'Keys are for admin keys only.')), null); break;
      default: location.hash = '#/links'; return;
    }
    cleanup = (await r) || null;
  } catch (x) {
    if (x instanceof APIError && x.status === 401) { clearKey(); signIn(x.message); return; }
    replace(main, errorBox(x));
  }
}

document.getElementById('sign-out').addEventListener('click', () => {
  if (cleanup) { cleanup(); cleanup = null; }
  clearKey();
  isAdmin = false;
  history.replaceState(null, '', location.pathname);
  signIn();
});
window.addEventListener('hashchange', route);

if (getKey()) start(); else signIn();
