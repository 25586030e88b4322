// Readers for the import formats of `linkpop import` (client/cli/formats.go):
// each returns [{line, create, disabled, err}] for a file's text. The CLI's
// reader is the reference; the browser test imports its fixtures.

export const formats = [
  ['jsonl', 'linkpop JSON lines (export)'],
  ['csv', 'CSV: code,url[,tags,expires_at,redirect]'],
  ['shlink', 'Shlink short-URL CSV'],
  ['yourls', 'YOURLS CSV (url table or Import-Export plugin)'],
  ['bitly', 'Bitly CSV export'],
  ['golink', 'golink /.export snapshot'],
];

const alias = {
  code: ['code', 'shortcode', 'keyword', 'custombitlink', 'customlink', 'source', 'backhalf', 'short'],
  shortURL: ['shorturl', 'bitlink', 'link', 'shortlink'],
  url: ['url', 'longurl', 'destinationurl', 'originalurl', 'target', 'long', 'destination'],
  tags: ['tags', 'tag'],
  expires: ['expiresat', 'expires', 'validuntil'],
  redirect: ['redirect', 'redirecttype', 'status'],
};

const norm = (s) => s.replace(/^\ufeff/, '').trim().toLowerCase().replace(/[ _-]/g, '');

// parseCSV splits text into records with their first line numbers
// (RFC 4180, quotes optional, a stray quote kept as text).
export function parseCSV(text) {
  const out = [];
  let rec = [], f = '', line = 1, start = 1, i = 0, quoted = false, any = false;
  while (i < text.length) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { f += '"'; i += 2; continue; }
      if (c === '"') { quoted = false; i++; continue; }
      if (c === '\n') line++;
      f += c; i++; continue;
    }
    if (c === '"' && f === '') { quoted = true; any = true; i++; continue; }
    if (c === ',') { rec.push(f); f = ''; any = true; i++; continue; }
    if (c === '\r' && text[i + 1] === '\n') { i++; continue; }
    if (c === '\n') {
      if (any || f !== '') { rec.push(f); out.push({ line: start, rec }); }
      rec = []; f = ''; any = false; line++; start = line; i++; continue;
    }
    f += c; any = true; i++;
  }
  if (any || f !== '') { rec.push(f); out.push({ line: start, rec }); }
  return out;
}

function codeFromShortURL(s) {
  if (!s) return '';
  try { return new URL(s.includes('://') ? s : 'https://' + s).pathname.replace(/^\/+|\/+$/g, ''); } catch (_) { return ''; }
}

function readCSV(format, text) {
  const rows = parseCSV(text);
  if (!rows.length) return [];
  let cols = new Map(rows[0].rec.map((hd, i) => [norm(hd), i]));
  const col = (names) => { for (const n of names) if (cols.has(n)) return cols.get(n); return -1; };
  let body = rows.slice(1);
  if (col(alias.url) < 0) {
    if (format === 'csv') { cols = new Map([['code', 0], ['url', 1], ['tags', 2], ['expiresat', 3], ['redirect', 4]]); body = rows; }
    else if (format === 'yourls') { cols = new Map([['keyword', 0], ['url', 1]]); body = rows; }
    else throw new Error(`line 1: no column with the target URL (looked for ${alias.url.join(', ')})`);
  }
  const get = (rec, names) => { const i = col(names); return i < 0 || i >= rec.length ? '' : rec[i].trim(); };
  return body.map(({ line, rec }) => {
    const it = { line, create: { url: get(rec, alias.url) }, disabled: false, err: '' };
    let code = get(rec, alias.code) || codeFromShortURL(get(rec, alias.shortURL));
    if (format === 'yourls') code = code.replace(/^\/+|\/+$/g, '');
    if (format === 'bitly' && code.includes('/')) code = codeFromShortURL(code);
    if (code) it.create.code = code;
    const t = get(rec, alias.tags);
    if (t) it.create.tags = t.split(format === 'csv' ? /\|/ : /[|,]/).map((s) => s.trim()).filter(Boolean);
    if (format === 'csv') {
      const e = get(rec, alias.expires);
      if (e) {
        if (isNaN(Date.parse(e)) || !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(e)) { it.err = `expires_at "${e}" is not RFC 3339`; return it; }
        it.create.expires_at = e;
      }
      const rd = get(rec, alias.redirect);
      if (rd) {
        if (!/^-?\d+$/.test(rd)) { it.err = `redirect "${rd}" is not a number`; return it; }
        it.create.redirect = Number(rd);
      }
    }
    if (!it.create.url) it.err = 'no target URL on this line';
    return it;
  });
}

function readJSONL(format, text) {
  const out = [];
  text.split('\n').forEach((raw, i) => {
    if (!raw.trim()) return;
    const line = i + 1;
    let j;
    try { j = JSON.parse(raw); } catch (x) { out.push({ line, create: {}, err: format === 'golink' ? 'not a golink record' : 'not a JSON link object' }); return; }
    if (j === null || typeof j !== 'object' || Array.isArray(j)) { out.push({ line, create: {}, err: 'not a JSON object' }); return; }
    if (format === 'golink') {
      const it = { line, create: { url: j.Long || '', code: j.Short || undefined }, err: '' };
      if (String(j.Long || '').includes('{{')) it.err = `golink "${j.Short}" is a template (${j.Long}), which a static redirect cannot express`;
      out.push(it);
      return;
    }
    const c = { url: j.url || '' };
    for (const k of ['code', 'redirect', 'expires_at', 'tags']) if (j[k] !== undefined && j[k] !== null && j[k] !== '' && j[k] !== 0) c[k] = j[k];
    if (j.max_visits) c.max_visits = j.max_visits;
    if (Array.isArray(c.tags) && !c.tags.length) delete c.tags;
    const it = { line, create: c, disabled: j.status === 'disabled', err: '' };
    if (j.status && j.status !== 'active' && j.status !== 'disabled') it.err = `status "${j.status}" is neither active nor disabled`;
    out.push(it);
  });
  return out;
}

// read parses text in format.
export function read(format, text) {
  switch (format) {
    case 'jsonl': case 'golink': return readJSONL(format, text);
    case 'csv': case 'shlink': case 'yourls': case 'bitly': return readCSV(format, text);
  }
  throw new Error(`unknown format ${format}`);
}

// check applies the API's rules a browser can check without the server:
// an http(s) URL with a host, a code of 3–64 of [A-Za-z0-9_-], a redirect
// of 301/302/307/308. The server checks everything again on import.
export function check(c) {
  if (c.url.length > 8000) return 'url_too_long: the URL is longer than 8,000 bytes';
  if (/[\u0000-\u001f\u007f\\]/.test(c.url)) return 'invalid_url: the URL has control characters or a backslash';
  let u;
  try { u = new URL(c.url); } catch (_) { return 'invalid_url: not a URL'; }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return 'url_scheme_not_allowed: only http and https';
  if (!u.hostname) return 'invalid_url: no host';
  if (c.code !== undefined && !/^[A-Za-z0-9_-]{3,64}$/.test(c.code)) return 'invalid_code: 3–64 of A–Z a–z 0–9 _ -';
  if (c.redirect !== undefined && ![301, 302, 307, 308].includes(c.redirect)) return 'invalid_redirect: 301, 302, 307 or 308';
  return '';
}
