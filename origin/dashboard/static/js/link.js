// A link's page: its details, edit, deactivate, QR, and its stats with
// the interval picker, the world map, the breakdowns and the live
// counter fed by the SSE endpoint.
import { call, blob, events, enc } from './api.js';
import { h, replace, field, errorBox, fmtTime, fmtNum, statusOf, toast, copy, download, toLocalInput, fromLocalInput } from './dom.js';
import { seriesChart } from './chart.js';
import { worldMap } from './map.js';

export function copyButton(text, what) {
  return h('button', { type: 'button', class: 'secondary', onclick: () => copy(text, what) }, 'Copy');
}

// qrControls are the QR format picker and the Download QR button of l.
export function qrControls(l) {
  const fmt = h('select', { id: 'qr-' + Math.random().toString(36).slice(2) }, h('option', { value: 'png' }, 'PNG'), h('option', { value: 'svg' }, 'SVG'));
  const btn = h('button', { type: 'button', class: 'secondary', onclick: async () => {
    try {
      const b = await blob(`/v1/links/${enc(l.code)}/qr?format=${fmt.value}&size=512`);
      download(b, `${l.code}.${fmt.value}`);
    } catch (x) { toast(`QR: ${x.message}`); }
  } }, 'Download QR');
  return [h('span', { class: 'inline-field' }, h('label', { for: fmt.id }, 'QR format'), fmt), btn];
}

const ranges = [
  ['hour', 'Last hour', 3600e3, 'minute'],
  ['day', 'Last day', 86400e3, 'hour'],
  ['7d', 'Last 7 days', 7 * 86400e3, 'hour'],
  ['30d', 'Last 30 days', 30 * 86400e3, 'day'],
  ['custom', 'Custom', 0, ''],
];

function breakdown(title, rows, label) {
  const total = rows.reduce((s, r) => s + r.clicks, 0) || 1;
  return h('section', { class: 'card breakdown', 'aria-label': title }, h('h3', {}, title),
    rows.length ? h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, label), h('th', { scope: 'col', class: 'num' }, 'Clicks'))),
      h('tbody', {}, rows.map((r) => h('tr', {},
        h('td', {}, h('span', { class: 'bar-label' }, label === 'Referrer' && r.key === '' ? '(direct)' : r.key),
          h('meter', { min: 0, max: total, value: r.clicks, 'aria-hidden': 'true' })),
        h('td', { class: 'num' }, fmtNum(r.clicks))))))
      : h('p', { class: 'muted' }, 'No clicks in this range.'));
}

function stat(name, value, extra) {
  const lid = 'stat-' + name.toLowerCase().replace(/\s+/g, '-');
  return h('div', { class: 'stat' }, h('span', { id: lid, class: 'stat-name' }, name),
    h('output', { 'aria-labelledby': lid, class: 'stat-value', ...extra }, value));
}

function editForm(l, onSaved) {
  const url = field('Destination URL', h('input', { type: 'text', inputmode: 'url', spellcheck: 'false', value: l.url }));
  const redirect = field('Redirect type', h('select', {}, [301, 302, 307, 308].map((n) => h('option', { value: String(n), selected: n === l.redirect }, String(n)))));
  const expires = field('Expires at', h('input', { type: 'datetime-local', value: toLocalInput(l.expires_at) }), 'Empty: never');
  const tags = field('Tags', h('input', { type: 'text', value: l.tags.join(', ') }), 'Separated by commas');
  const maxVisits = field('Max visits', h('input', { type: 'number', min: 1, step: 1, value: l.max_visits === null ? '' : String(l.max_visits) }), 'Empty: no limit');
  const fields = { url, redirect, expires_at: expires, tags, max_visits: maxVisits };
  const general = h('div');
  const form = h('form', { class: 'grid', novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    for (const f of Object.values(fields)) f.set('');
    general.replaceChildren();
    const body = {
      url: url.input.value.trim(),
      redirect: Number(redirect.input.value),
      expires_at: fromLocalInput(expires.input.value),
      tags: tags.input.value.split(',').map((s) => s.trim()).filter(Boolean),
      max_visits: maxVisits.input.value ? Number(maxVisits.input.value) : null,
    };
    try {
      const nl = await call('PATCH', '/v1/links/' + enc(l.code), body, { headers: { 'If-Match': `"${l.revision}"` } });
      toast('Saved');
      onSaved(nl);
    } catch (x) {
      const f = fields[(x.field || '').replace(/[.[].*$/, '')];
      if (f) { f.set(`${x.message} (${x.code})`); f.input.focus(); } else replace(general, errorBox(x));
    }
  } }, url.wrap, redirect.wrap, expires.wrap, tags.wrap, maxVisits.wrap, general,
  h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Save changes')));
  return h('details', { class: 'card' }, h('summary', {}, 'Edit'), form);
}

function deactivate(l, onDone) {
  const err = h('div');
  const dlg = h('dialog', { 'aria-labelledby': 'deact-title' },
    h('h2', { id: 'deact-title' }, 'Deactivate this link?'),
    h('p', {}, 'Visitors will get “410 Gone” from every edge. This cannot be undone from the dashboard.'), err,
    h('div', { class: 'row' },
      h('button', { type: 'button', class: 'secondary', onclick: () => dlg.close() }, 'Cancel'),
      h('button', { type: 'button', class: 'danger', onclick: async () => {
        try {
          await call('DELETE', '/v1/links/' + enc(l.code));
          dlg.close();
          toast('Link deactivated');
          onDone();
        } catch (x) { replace(err, errorBox(x)); }
      } }, 'Yes, deactivate')));
  const btn = h('button', { type: 'button', class: 'danger', onclick: () => dlg.showModal() }, 'Deactivate');
  return [btn, dlg];
}

export async function render(main, code) {
  const ctl = new AbortController();
  let chart = null;
  const head = h('section', { class: 'card' });
  const statsEl = h('section', { 'aria-label': 'Statistics' });
  const liveOut = stat('Live clicks', '…');
  replace(main, h('p', {}, h('a', { href: '#/links' }, '← All links')), h('h1', { class: 'mono' }, code), head, statsEl);

  async function loadLink() {
    const l = await call('GET', '/v1/links/' + enc(code));
    const st = statusOf(l);
    replace(head,
      h('p', { class: 'short' }, h('output', { 'aria-label': 'Short URL', class: 'mono' }, l.short_url)),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Destination'), h('dd', { class: 'url' }, l.url),
        h('dt', {}, 'Status'), h('dd', {}, h('span', { class: 'status ' + st }, st)),
        h('dt', {}, 'Redirect'), h('dd', {}, String(l.redirect)),
        h('dt', {}, 'Tags'), h('dd', {}, l.tags.length ? l.tags.map((t) => h('span', { class: 'tag' }, t)) : '—'),
        h('dt', {}, 'Expires'), h('dd', {}, l.expires_at ? fmtTime(l.expires_at) : 'never'),
        h('dt', {}, 'Max visits'), h('dd', {}, l.max_visits === null ? 'no limit' : fmtNum(l.max_visits)),
        h('dt', {}, 'Created'), h('dd', {}, fmtTime(l.created_at)),
        h('dt', {}, 'Revision'), h('dd', {}, String(l.revision))),
      h('div', { class: 'row' }, copyButton(l.short_url, 'Short URL'), ...qrControls(l), l.status === 'active' ? deactivate(l, loadLink) : null),
      l.status === 'active' ? editForm(l, () => loadLink()) : null);
  }

  // The range picker.
  const rangeSel = field('Range', h('select', {}, ranges.map(([v, label]) => h('option', { value: v, selected: v === '7d' }, label))));
  const from = field('From', h('input', { type: 'datetime-local' }));
  const to = field('To', h('input', { type: 'datetime-local' }));
  const apply = h('button', { type: 'button', class: 'secondary' }, 'Apply');
  const custom = h('div', { class: 'row', hidden: true }, from.wrap, to.wrap, apply);
  const body = h('div');
  rangeSel.input.addEventListener('input', () => {
    custom.hidden = rangeSel.input.value !== 'custom';
    if (custom.hidden) loadStats();
    else if (!from.input.value) { from.input.value = toLocalInput(new Date(Date.now() - 86400e3)); to.input.value = toLocalInput(new Date()); }
  });
  apply.addEventListener('click', () => loadStats());
  replace(statsEl, h('div', { class: 'card' }, h('h2', {}, 'Clicks'), h('div', { class: 'row' }, rangeSel.wrap, custom)), body);

  function query() {
    const r = ranges.find((x) => x[0] === rangeSel.input.value);
    if (r[0] === 'custom') {
      const q = [];
      if (from.input.value) q.push('from=' + enc(fromLocalInput(from.input.value)));
      if (to.input.value) q.push('to=' + enc(fromLocalInput(to.input.value)));
      return q.join('&');
    }
    return `from=${enc(new Date(Date.now() - r[2]).toISOString())}&interval=${r[3]}`;
  }

  let loading = false, again = false;
  async function loadStats() {
    if (loading) { again = true; return; }
    loading = true;
    try {
      const s = await call('GET', `/v1/links/${enc(code)}/stats?${query()}`, undefined, { signal: ctl.signal });
      if (chart) chart.destroy();
      chart = seriesChart(s);
      const complete = s.complete_through ? `Complete up to ${fmtTime(s.complete_through)}` : 'No edge has reported clicks yet';
      const countries = breakdown('Countries', s.countries, 'Country');
      replace(body,
        h('div', { class: 'stats' }, stat('Total clicks', fmtNum(s.clicks)), stat('Uniques', fmtNum(s.uniques)), stat('Bots', fmtNum(s.bots)), liveOut),
        h('p', { class: 'muted', id: 'complete' }, complete,
          s.incomplete_edges && s.incomplete_edges.length ? `; still waiting for ${s.incomplete_edges.join(', ')}` : ''),
        h('div', { class: 'card' }, chart.el),
        h('div', { class: 'map-wrap card' }, h('h3', {}, 'Clicks by country'), h('div', { class: 'map-slot' }, h('p', { class: 'muted' }, 'Loading map…'))),
        h('div', { class: 'breakdowns' }, countries, breakdown('Referrers', s.referrers, 'Referrer'), breakdown('Devices', s.devices, 'Device'),
          breakdown('Browsers', s.browsers, 'Browser'), breakdown('Operating systems', s.os, 'OS'), breakdown('Edges', s.edges, 'Edge')));
      worldMap(s.countries).then((svg) => { const slot = body.querySelector('.map-slot'); if (slot) replace(slot, svg); })
        .catch((x) => { const slot = body.querySelector('.map-slot'); if (slot) replace(slot, errorBox(x)); });
    } catch (x) {
      if (ctl.signal.aborted) return;
      replace(body, errorBox(x));
    } finally {
      loading = false;
      if (again && !ctl.signal.aborted) { again = false; loadStats(); }
    }
  }

  // The live counter: one stream per page, read with fetch so the key is
  // a header; each event also refreshes the stats (at most every 2 s).
  let refresh = null;
  async function live() {
    const out = liveOut.querySelector('output');
    for (let delay = 1000; !ctl.signal.aborted; delay = Math.min(delay * 2, 30000)) {
      try {
        await events(`/v1/links/${enc(code)}/stats/live`, ctl.signal, (name, data) => {
          if (name !== 'clicks') return;
          const ev = JSON.parse(data);
          out.textContent = fmtNum(ev.clicks);
          out.dataset.clicks = String(ev.clicks);
          delay = 1000;
          if (!refresh) refresh = setTimeout(() => { refresh = null; loadStats(); }, 2000);
        });
      } catch (x) {
        if (ctl.signal.aborted) return;
        out.textContent = '—';
      }
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  await loadLink();
  await loadStats();
  live();
  return () => { ctl.abort(); clearTimeout(refresh); if (chart) chart.destroy(); };
}
