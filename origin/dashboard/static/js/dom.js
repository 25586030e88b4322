// DOM helpers. Every value from the API goes into the page as text
// (textContent, attribute values), never as HTML.

// h builds an element: h('a', {href: '#/x', class: 'c'}, 'text', child...).
// Attributes starting with "on" take a function (addEventListener);
// others are set with setAttribute; false/null/undefined are skipped.
export function h(tag, attrs, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' && 'value' in el && !svg) el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// replace empties el and appends children.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
export function id(prefix) { uid++; return `${prefix}-${uid}`; }

// field is a labelled control with a place for its error message:
// {wrap, input, error}. The error is tied to the input by
// aria-describedby and aria-invalid.
export function field(label, input, hint) {
  const iid = input.id || (input.id = id('f'));
  const eid = iid + '-err';
  const error = h('p', { class: 'field-error', id: eid, hidden: true });
  const hid = hint ? iid + '-hint' : null;
  input.setAttribute('aria-describedby', hid ? `${hid} ${eid}` : eid);
  const wrap = h('div', { class: 'field' }, h('label', { for: iid }, label), input,
    hint ? h('p', { class: 'hint', id: hid }, hint) : null, error);
  return { wrap, input, error, set(msg) {
    if (msg) { error.textContent = msg; error.hidden = false; input.setAttribute('aria-invalid', 'true'); }
    else { error.textContent = ''; error.hidden = true; input.removeAttribute('aria-invalid'); }
  } };
}

// toast announces a short message.
export function toast(msg) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ''; }, 4000);
}

export function fmtTime(s) {
  if (!s) return '—';
  const d = new Date(s);
  if (isNaN(d)) return String(s);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export function fmtNum(n) { return Number(n || 0).toLocaleString(); }

// statusOf is a link's status as shown: active, disabled or expired.
export function statusOf(l) {
  if (l.status === 'disabled') return 'disabled';
  if (l.expires_at && new Date(l.expires_at) <= new Date()) return 'expired';
  return 'active';
}

// copy puts text on the clipboard and says so.
export async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    toast(`${what} copied`);
  } catch (_) {
    toast(`Could not copy; select the ${what.toLowerCase()} and copy it`);
  }
}

// download saves a Blob under name.
export function download(b, name) {
  const url = URL.createObjectURL(b);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// errorBox is a message for an API error, with its code.
export function errorBox(err) {
  const code = err && err.code ? ` (${err.code})` : '';
  return h('p', { class: 'error', role: 'alert' }, `${err && err.message ? err.message : String(err)}${code}`);
}

// localInput converts an ISO time to a datetime-local value, and back.
export function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}
export function fromLocalInput(v) { return v ? new Date(v).toISOString() : null; }
