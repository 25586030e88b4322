// The links page: the create form and the list with search, tag and
// status filters and pagination.
import { call, enc } from './api.js';
import { h, replace, field, errorBox, fmtTime, fmtNum, statusOf, toast, fromLocalInput } from './dom.js';
import { qrControls, copyButton } from './link.js';

// listCap bounds how many links the list loads (pages of 1,000); search
// and filters work on what was loaded.
const listCap = 10000;
const pageSize = 25;

// createForm is the form that shortens a URL; onCreated gets the link.
export function createForm(onCreated) {
  const url = field('Destination URL', h('input', { type: 'text', inputmode: 'url', autocomplete: 'off', spellcheck: 'false', placeholder: 'https://example.com/page', required: true }));
  const code = field('Custom code', h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', maxlength: 64 }), 'Optional: 3–64 of A–Z a–z 0–9 _ -');
  const redirect = field('Redirect type', h('select', {},
    h('option', { value: '302' }, '302 Found (default)'), h('option', { value: '301' }, '301 Moved Permanently'),
    h('option', { value: '307' }, '307 Temporary Redirect'), h('option', { value: '308' }, '308 Permanent Redirect')));
  const expires = field('Expires at', h('input', { type: 'datetime-local' }), 'Optional; your local time');
  const tags = field('Tags', h('input', { type: 'text', autocomplete: 'off' }), 'Optional, separated by commas');
  const maxVisits = field('Max visits', h('input', { type: 'number', min: 1, step: 1, inputmode: 'numeric' }), 'Optional: disabled after this many clicks');
  const fields = { url, code, redirect, expires_at: expires, tags, max_visits: maxVisits };
  const general = h('div');
  const result = h('div', { class: 'result', hidden: true });
  const submit = h('button', { type: 'submit' }, 'Shorten');
  const form = h('form', { class: 'card', novalidate: true, 'aria-labelledby': 'create-title', onsubmit: async (e) => {
    e.preventDefault();
    for (const f of Object.values(fields)) f.set('');
    general.replaceChildren();
    const body = { url: url.input.value.trim() };
    if (code.input.value.trim()) body.code = code.input.value.trim();
    if (redirect.input.value !== '302') body.redirect = Number(redirect.input.value);
    if (expires.input.value) body.expires_at = fromLocalInput(expires.input.value);
    const t = tags.input.value.split(',').map((s) => s.trim()).filter(Boolean);
    if (t.length) body.tags = t;
    if (maxVisits.input.value) body.max_visits = Number(maxVisits.input.value);
    submit.disabled = true;
    try {
      const l = await call('POST', '/v1/links', body);
      showCreated(result, l);
      form.reset();
      onCreated(l);
    } catch (x) {
      // code_taken comes from the store without a field: it is the code's.
      const name = (x.field || '').replace(/[.[].*$/, '') || (x.code === 'code_taken' ? 'code' : '');
      const f = fields[name];
      if (f) {
        const d = f.wrap.closest('details');
        if (d) d.open = true;
        f.set(`${x.message} (${x.code})`);
        f.input.focus();
      } else replace(general, errorBox(x));
    } finally {
      submit.disabled = false;
    }
  } },
  h('h2', { id: 'create-title' }, 'Shorten a URL'),
  h('div', { class: 'grid grid-main' }, url.wrap, code.wrap),
  h('details', {}, h('summary', {}, 'More options'), h('div', { class: 'grid' }, redirect.wrap, expires.wrap, tags.wrap, maxVisits.wrap)),
  general, submit);
  return h('section', {}, form, result);
}

function showCreated(el, l) {
  el.hidden = false;
  replace(el, h('h2', {}, 'Your short link'),
    h('p', { class: 'short' }, h('output', { 'aria-label': 'Short URL', class: 'mono' }, l.short_url)),
    h('div', { class: 'row' }, copyButton(l.short_url, 'Short URL'), ...qrControls(l), h('a', { href: '#/links/' + enc(l.code) }, 'Open its page')));
}

export async function render(main) {
  const listEl = h('section', { 'aria-labelledby': 'list-title', class: 'card' });
  replace(main, h('h1', {}, 'Links'), createForm(() => load()), listEl);

  const search = field('Search', h('input', { type: 'search', autocomplete: 'off', placeholder: 'code, URL or tag' }));
  const tag = field('Tag', h('select', {}, h('option', { value: '' }, 'All tags')));
  const status = field('Status', h('select', {}, h('option', { value: '' }, 'All'),
    h('option', { value: 'active' }, 'Active'), h('option', { value: 'disabled' }, 'Disabled'), h('option', { value: 'expired' }, 'Expired')));
  const info = h('p', { class: 'muted', 'aria-live': 'polite' });
  const tbody = h('tbody');
  const prev = h('button', { type: 'button', class: 'secondary' }, 'Previous page');
  const next = h('button', { type: 'button', class: 'secondary' }, 'Next page');
  const pageInfo = h('span', { class: 'muted' });
  replace(listEl, h('h2', { id: 'list-title' }, 'Your links'),
    h('div', { class: 'filters' }, search.wrap, tag.wrap, status.wrap), info,
    h('div', { class: 'table-wrap' }, h('table', { class: 'links-table' }, h('caption', { class: 'sr-only' }, 'Links'),
      h('thead', {}, h('tr', {}, ...['Code', 'Destination', 'Tags', 'Status', 'Clicks (30 days)', 'Created'].map((c) => h('th', { scope: 'col' }, c)))), tbody)),
    h('div', { class: 'row' }, prev, pageInfo, next));

  let all = [], clicks = new Map(), page = 0, capped = false;

  function shown() {
    const q = search.input.value.trim().toLowerCase();
    const tg = tag.input.value, st = status.input.value;
    return all.filter((l) => (!q || l.code.toLowerCase().includes(q) || l.url.toLowerCase().includes(q) || l.tags.some((t) => t.toLowerCase().includes(q)))
      && (!tg || l.tags.includes(tg)) && (!st || statusOf(l) === st));
  }

  function draw() {
    const rows = shown();
    const pages = Math.max(1, Math.ceil(rows.length / pageSize));
    page = Math.min(page, pages - 1);
    const slice = rows.slice(page * pageSize, (page + 1) * pageSize);
    replace(tbody, slice.length ? slice.map((l) => h('tr', {},
      h('td', {}, h('a', { href: '#/links/' + enc(l.code), class: 'mono' }, l.code)),
      h('td', { class: 'url' }, l.url),
      h('td', {}, l.tags.map((t) => h('span', { class: 'tag' }, t))),
      h('td', {}, h('span', { class: 'status ' + statusOf(l) }, statusOf(l))),
      h('td', { class: 'num' }, fmtNum(clicks.get(l.code) || 0)),
      h('td', {}, fmtTime(l.created_at)))) : h('tr', {}, h('td', { colspan: 6 }, all.length ? 'No link matches.' : 'No links yet.')));
    info.textContent = `${rows.length} of ${all.length} links${capped ? ` (the first ${listCap} loaded)` : ''}`;
    pageInfo.textContent = `Page ${page + 1} of ${pages}`;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }

  async function load() {
    info.textContent = 'Loading…';
    const got = [];
    let cursor = null;
    do {
      const p = await call('GET', '/v1/links?limit=1000' + (cursor ? '&cursor=' + enc(cursor) : ''));
      got.push(...p.links);
      cursor = p.next_cursor;
    } while (cursor && got.length < listCap);
    all = got;
    capped = !!cursor;
    const tags = [...new Set(all.flatMap((l) => l.tags))].sort();
    const cur = tag.input.value;
    replace(tag.input, h('option', { value: '' }, 'All tags'), tags.map((t) => h('option', { value: t }, t)));
    tag.input.value = tags.includes(cur) ? cur : '';
    draw();
    try {
      const from = new Date(Date.now() - 30 * 86400e3).toISOString();
      const top = await call('GET', '/v1/stats?limit=1000&from=' + enc(from));
      clicks = new Map(top.links.map((t) => [t.code, t.clicks]));
      draw();
    } catch (x) {
      toast('Click counts unavailable: ' + x.message);
    }
  }

  for (const c of [search.input, tag.input, status.input]) c.addEventListener('input', () => { page = 0; draw(); });
  prev.addEventListener('click', () => { page--; draw(); });
  next.addEventListener('click', () => { page++; draw(); });
  try { await load(); } catch (x) { replace(info, errorBox(x)); throw x; }
}
