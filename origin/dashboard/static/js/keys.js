// API keys (admin keys only): mint with scopes and a rate limit (the
// secret is shown once), list, revoke.
import { call, enc } from './api.js';
import { h, replace, field, errorBox, fmtTime, copy, toast } from './dom.js';

const scopes = ['links:read', 'links:write', 'admin'];

export async function render(main) {
  const name = field('Name', h('input', { type: 'text', autocomplete: 'off', maxlength: 100 }));
  const boxes = scopes.map((s) => { const i = h('input', { type: 'checkbox', value: s, id: 'scope-' + s.replace(':', '-'), checked: s === 'links:read' }); return [i, h('label', { for: i.id, class: 'check' }, i, ' ', s)]; });
  const rate = field('Rate limit (requests/s)', h('input', { type: 'number', step: 'any' }), 'Empty: the server default; negative: unlimited');
  const burst = field('Burst', h('input', { type: 'number', min: 1, step: 1 }), 'Empty: the server default');
  const fields = { name, rate_limit: rate, burst };
  const out = h('div');
  const listEl = h('div');
  const form = h('form', { class: 'card', novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    for (const f of Object.values(fields)) f.set('');
    out.replaceChildren();
    const body = { name: name.input.value.trim(), scopes: boxes.filter(([i]) => i.checked).map(([i]) => i.value) };
    if (rate.input.value !== '') body.rate_limit = Number(rate.input.value);
    if (burst.input.value !== '') body.burst = Number(burst.input.value);
    try {
      const k = await call('POST', '/v1/keys', body);
      replace(out, h('div', { class: 'result', role: 'status' }, h('p', {}, 'The new key is shown once: copy it now.'),
        h('p', { class: 'short' }, h('output', { 'aria-label': 'New API key', class: 'mono' }, k.key)),
        h('button', { type: 'button', class: 'secondary', onclick: () => copy(k.key, 'Key') }, 'Copy key')));
      form.reset();
      await load();
    } catch (x) {
      const f = fields[x.field];
      if (f) f.set(`${x.message} (${x.code})`); else replace(out, errorBox(x));
    }
  } }, h('h2', {}, 'Mint a key'), name.wrap,
  h('fieldset', {}, h('legend', {}, 'Scopes'), boxes.map(([, l]) => l)), h('div', { class: 'grid' }, rate.wrap, burst.wrap), h('button', { type: 'submit' }, 'Mint key'), out);

  async function load() {
    const { keys } = await call('GET', '/v1/keys');
    replace(listEl, h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Name', 'ID', 'Scopes', 'Rate limit', 'Created', 'Status', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, keys.map((k) => h('tr', {},
        h('td', {}, k.name), h('td', { class: 'mono' }, k.id), h('td', {}, k.scopes.join(', ')),
        h('td', {}, k.rate_limit < 0 ? 'unlimited' : `${k.rate_limit}/s (burst ${k.burst})`),
        h('td', {}, fmtTime(k.created_at)), h('td', {}, k.revoked_at ? `revoked ${fmtTime(k.revoked_at)}` : 'active'),
        h('td', {}, k.revoked_at ? null : h('button', { type: 'button', class: 'danger', 'aria-label': `Revoke ${k.name || k.id}`, onclick: async () => {
          try { await call('DELETE', '/v1/keys/' + enc(k.id)); toast('Key revoked'); await load(); } catch (x) { toast(x.message); }
        } }, 'Revoke'))))))));
  }
  replace(main, h('h1', {}, 'API keys'), form, h('section', { class: 'card', 'aria-labelledby': 'keys-title' }, h('h2', { id: 'keys-title' }, 'Keys'), listEl));
  try { await load(); } catch (x) { replace(listEl, errorBox(x)); }
}
