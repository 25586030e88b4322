// The overview: totals and the top links for a chosen range.
import { call, enc } from './api.js';
import { h, replace, field, errorBox, fmtTime, fmtNum, fromLocalInput, toLocalInput } from './dom.js';

const ranges = [['day', 'Last day', 86400e3], ['7d', 'Last 7 days', 7 * 86400e3], ['30d', 'Last 30 days', 30 * 86400e3], ['custom', 'Custom', 0]];

export async function render(main) {
  const sel = field('Range', h('select', {}, ranges.map(([v, l]) => h('option', { value: v, selected: v === '7d' }, l))));
  const from = field('From', h('input', { type: 'datetime-local', value: toLocalInput(new Date(Date.now() - 7 * 86400e3)) }));
  const to = field('To', h('input', { type: 'datetime-local', value: toLocalInput(new Date()) }));
  const apply = h('button', { type: 'button', class: 'secondary' }, 'Apply');
  const custom = h('div', { class: 'row', hidden: true }, from.wrap, to.wrap, apply);
  const body = h('div');
  replace(main, h('h1', {}, 'Overview'), h('div', { class: 'card row' }, sel.wrap, custom), body);

  async function load() {
    let q;
    const r = ranges.find((x) => x[0] === sel.input.value);
    if (r[0] === 'custom') q = `from=${enc(fromLocalInput(from.input.value) || '')}&to=${enc(fromLocalInput(to.input.value) || '')}`;
    else q = 'from=' + enc(new Date(Date.now() - r[2]).toISOString());
    try {
      const t = await call('GET', `/v1/stats?limit=50&${q}`);
      const lid = (n) => 'ov-' + n.toLowerCase();
      replace(body,
        h('div', { class: 'stats' },
          h('div', { class: 'stat' }, h('span', { id: lid('clicks'), class: 'stat-name' }, 'Clicks'), h('output', { 'aria-labelledby': lid('clicks'), class: 'stat-value' }, fmtNum(t.clicks))),
          h('div', { class: 'stat' }, h('span', { id: lid('bots'), class: 'stat-name' }, 'Bots'), h('output', { 'aria-labelledby': lid('bots'), class: 'stat-value' }, fmtNum(t.bots))),
          h('div', { class: 'stat' }, h('span', { id: lid('links'), class: 'stat-name' }, 'Links clicked'), h('output', { 'aria-labelledby': lid('links'), class: 'stat-value' }, fmtNum(t.links.length)))),
        h('p', { class: 'muted' }, `${fmtTime(t.from)} – ${fmtTime(t.to)}. `, t.complete_through ? `Complete up to ${fmtTime(t.complete_through)}` : 'No edge has reported clicks yet'),
        h('section', { class: 'card', 'aria-labelledby': 'top-title' }, h('h2', { id: 'top-title' }, 'Top links'),
          t.links.length ? h('div', { class: 'table-wrap' }, h('table', {},
            h('thead', {}, h('tr', {}, ['Code', 'Clicks', 'Uniques', 'Bots'].map((c, i) => h('th', { scope: 'col', class: i ? 'num' : null }, c)))),
            h('tbody', {}, t.links.map((l) => h('tr', {},
              h('td', {}, h('a', { href: '#/links/' + enc(l.code), class: 'mono' }, l.code)),
              h('td', { class: 'num' }, fmtNum(l.clicks)), h('td', { class: 'num' }, fmtNum(l.uniques)), h('td', { class: 'num' }, fmtNum(l.bots)))))))
            : h('p', { class: 'muted' }, 'No clicks in this range.')));
    } catch (x) { replace(body, errorBox(x)); }
  }
  sel.input.addEventListener('input', () => { custom.hidden = sel.input.value !== 'custom'; if (custom.hidden) load(); });
  apply.addEventListener('click', load);
  await load();
}
