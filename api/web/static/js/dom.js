// DOM helpers shared by every view: element building (never innerHTML, so no
// text from a run can become markup), statuses as icon + word, and formats.

/** Build an element: h('button', {class: 'x', onclick: fn, 'aria-label': 'y'}, child, 'text'). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name in PROPS) el[name] = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

const PROPS = { value: 1, checked: 1, disabled: 1, hidden: 1, selected: 1, required: 1, tabIndex: 1 };

/** Append children (nodes, strings, arrays, null) to el. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace el's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// A status is never told by colour alone: every badge has its icon and its word.
export const STATUS = {
  pending: { icon: '○', label: 'pending' },
  queued: { icon: '…', label: 'queued' },
  running: { icon: '◐', label: 'running' },
  paused: { icon: '‖', label: 'waiting for approval' },
  completed: { icon: '✓', label: 'completed' },
  failed: { icon: '✕', label: 'failed' },
  rejected: { icon: '⊘', label: 'rejected' },
  skipped: { icon: '↷', label: 'skipped' },
  cancelled: { icon: '■', label: 'cancelled' },
};
export const TERMINAL = new Set(['completed', 'failed', 'rejected', 'cancelled']);

/** <span class="status" data-status="running"><span aria-hidden>◐</span> running</span> */
export function statusBadge(status, { short = false } = {}) {
  const known = STATUS[status] || { icon: '?', label: status || 'unknown' };
  const label = short && status === 'paused' ? 'paused' : known.label;
  return h('span', { class: 'status', dataset: { status: status || 'unknown' } },
    h('span', { class: 'dot', 'aria-hidden': 'true', text: known.icon }), ' ', h('span', { class: 'word', text: label }));
}

/** "850 ms", "12 s", "3 min 4 s", "2 h 5 min". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  if (seconds < 1) return `${Math.max(0, Math.round(seconds * 1000))} ms`;
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A local date and time for an epoch in seconds. */
export function fmtTime(epoch) {
  if (!epoch) return '—';
  const d = new Date(epoch * 1000);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

/** The last characters of an id (ULIDs differ at the end within one millisecond). */
export function shortId(id) {
  return id ? id.slice(-8) : '';
}

/** Show a passing message (role=alert) for a few seconds. */
let toastTimer = 0;
export function toast(message) {
  const el = document.getElementById('toast');
  if (!el) return;
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

/** A problem (ApiError) as one sentence a person can act on. */
export function describeError(err) {
  if (err && err.problem) {
    const p = err.problem;
    return [p.title, p.detail].filter(Boolean).join(': ') || `HTTP ${err.status}`;
  }
  return String((err && err.message) || err);
}

/** A random key (Idempotency-Key); crypto.randomUUID needs a secure context, this does not. */
export function randomKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
