// Import: a file in a format `linkpop import` reads, checked line by line
// (dry run) or created through the bulk API, with per-line errors and a
// progress bar.
import { call, enc, APIError } from './api.js';
import { h, replace, field, errorBox, fmtNum } from './dom.js';
import { formats, read, check } from './formats.js';

const batchSize = 100;

export function render(main) {
  const file = field('File', h('input', { type: 'file', accept: '.csv,.jsonl,.json,.txt,text/csv,application/json' }));
  const format = field('Format', h('select', {}, formats.map(([v, l]) => h('option', { value: v }, l))));
  const dry = h('input', { type: 'checkbox', id: 'dry-run', checked: true });
  const progress = h('progress', { max: 1, value: 0, id: 'import-progress' });
  const status = h('p', { 'aria-live': 'polite', id: 'import-status' });
  const errors = h('div');
  const run = h('button', { type: 'submit' }, 'Import');
  file.input.addEventListener('change', () => {
    const n = (file.input.files[0] && file.input.files[0].name) || '';
    const guess = /shlink|short_urls/i.test(n) ? 'shlink' : /bitly/i.test(n) ? 'bitly' : /yourls/i.test(n) ? 'yourls' : /golink/i.test(n) ? 'golink' : /\.jsonl?$/i.test(n) ? 'jsonl' : /\.csv$/i.test(n) ? 'csv' : '';
    if (guess) format.input.value = guess;
  });
  const form = h('form', { class: 'card', novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    errors.replaceChildren();
    file.set('');
    const f = file.input.files[0];
    if (!f) { file.set('Choose a file'); return; }
    run.disabled = true;
    try {
      await importFile(await f.text(), format.input.value, dry.checked);
    } catch (x) { replace(errors, errorBox(x)); } finally { run.disabled = false; }
  } }, h('h2', {}, 'Import links'), file.wrap, format.wrap,
  h('p', {}, h('label', { for: 'dry-run', class: 'check' }, dry, ' Dry run (check every line, write nothing)')), run);

  async function importFile(text, fmt, dryRun) {
    const items = read(fmt, text);
    let done = 0, ok = 0, skipped = 0;
    const failed = [];
    progress.max = Math.max(1, items.length); progress.value = 0;
    const tick = () => { progress.value = done; status.textContent = `${fmtNum(done)} of ${fmtNum(items.length)} lines: ${fmtNum(ok)} ${dryRun ? 'valid' : 'created'}, ${fmtNum(failed.length)} failed${skipped ? `, ${skipped} disabled after create` : ''}`; };
    tick();
    const todo = [];
    for (const it of items) {
      const bad = it.err || check(it.create);
      if (bad) { failed.push({ line: it.line, code: it.create.code || '', msg: bad }); done++; } else todo.push(it);
    }
    tick();
    for (let i = 0; i < todo.length; i += batchSize) {
      const chunk = todo.slice(i, i + batchSize);
      if (dryRun) {
        await Promise.all(chunk.map(async (it) => {
          if (it.create.code) {
            try { await call('GET', '/v1/links/' + enc(it.create.code)); failed.push({ line: it.line, code: it.create.code, msg: 'code_taken: the code is already in use' }); return; }
            catch (x) { if (!(x instanceof APIError && x.status === 404)) throw x; }
          }
          ok++;
        }));
      } else {
        const res = await call('POST', '/v1/links/batch', { links: chunk.map((it) => it.create) });
        for (let j = 0; j < chunk.length; j++) {
          const r = res.results[j];
          if (r.error) { failed.push({ line: chunk[j].line, code: chunk[j].create.code || '', msg: `${r.error.code}: ${r.error.message}` }); continue; }
          ok++;
          if (chunk[j].disabled) { await call('DELETE', '/v1/links/' + enc(r.code)); skipped++; }
        }
      }
      done += chunk.length;
      tick();
    }
    failed.sort((a, b) => a.line - b.line);
    if (failed.length) {
      replace(errors, h('h3', {}, 'Lines with errors'), h('div', { class: 'table-wrap' }, h('table', { id: 'import-errors' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Line'), h('th', { scope: 'col' }, 'Code'), h('th', { scope: 'col' }, 'Error'))),
        h('tbody', {}, failed.map((f) => h('tr', {}, h('td', { class: 'num' }, String(f.line)), h('td', { class: 'mono' }, f.code), h('td', {}, f.msg)))))));
    }
  }
  replace(main, h('h1', {}, 'Import'), form, h('section', { class: 'card', 'aria-label': 'Import result' }, h('label', { for: 'import-progress' }, 'Progress'), progress, status, errors));
}
