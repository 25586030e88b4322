// The v1 API from the browser: the key lives in sessionStorage only and
// is sent as the Bearer header, never in a URL or a cookie.

const keyName = 'linkpop.key';

export function getKey() { return sessionStorage.getItem(keyName) || ''; }
export function setKey(k) { sessionStorage.setItem(keyName, k); }
export function clearKey() { sessionStorage.removeItem(keyName); }

// APIError is an error answer: the HTTP status and the API's error object.
export class APIError extends Error {
  constructor(status, obj) {
    super(obj && obj.message ? obj.message : `HTTP ${status}`);
    this.status = status;
    this.code = (obj && obj.code) || 'http_' + status;
    this.field = (obj && obj.field) || '';
  }
}

function headers(extra) {
  const h = new Headers(extra || {});
  const k = getKey();
  if (k) h.set('Authorization', 'Bearer ' + k);
  return h;
}

async function fail(resp) {
  let obj = null;
  try { obj = (await resp.json()).error; } catch (_) { /* not JSON */ }
  return new APIError(resp.status, obj);
}

// call sends one request to path (under /v1) and returns the decoded
// JSON answer, or null for an empty one; an error answer throws APIError.
export async function call(method, path, body, opts = {}) {
  const init = { method, headers: headers(opts.headers), cache: 'no-store', credentials: 'omit', signal: opts.signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers.set('Content-Type', 'application/json');
  }
  const resp = await fetch(path, init);
  if (!resp.ok) throw await fail(resp);
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

// blob fetches path as a Blob (the QR image).
export async function blob(path) {
  const resp = await fetch(path, { headers: headers(), cache: 'no-store', credentials: 'omit' });
  if (!resp.ok) throw await fail(resp);
  return resp.blob();
}

// events reads a Server-Sent Events stream with fetch, so the key goes
// in the Authorization header (EventSource cannot send one). onEvent gets
// (name, data) for each event; it returns when the stream ends or signal
// aborts, and throws on an error answer.
export async function events(path, signal, onEvent) {
  const resp = await fetch(path, { headers: headers({ Accept: 'text/event-stream' }), cache: 'no-store', credentials: 'omit', signal });
  if (!resp.ok) throw await fail(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '', name = 'message', data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      let line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (data.length) onEvent(name, data.join('\n'));
        name = 'message'; data = [];
      } else if (line.startsWith(':')) {
        // comment (heartbeat)
      } else {
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        let v = c < 0 ? '' : line.slice(c + 1);
        if (v.startsWith(' ')) v = v.slice(1);
        if (field === 'event') name = v;
        else if (field === 'data') data.push(v);
      }
    }
  }
}

export const enc = encodeURIComponent;
