// Every request of the console goes through request(): it sends the CSRF
// header on state-changing requests, shows the login view on a 401 and
// retries once logged in, and turns problem+json answers into ApiError.
//
// Identity (DESIGN §13): POST /api/login {token} answers 204 and sets an
// HttpOnly SameSite=Strict session cookie; GET /api/session says who is logged
// in and gives the CSRF token (``csrf_token``), which also may come as an
// X-CSRF-Token response header or a readable ``baton_csrf`` cookie. A server
// without these routes (404) runs without login: the console then never
// shows the login view unless a request answers 401.

export const CSRF_HEADER = 'X-CSRF-Token';
const CSRF_COOKIE = 'baton_csrf';
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** What the console knows of the session: auth 'unknown' | 'off' | 'on'; principal when logged in. */
export const session = { auth: 'unknown', principal: null, csrf: null };

let loginHandler = null;
let pendingLogin = null;

/** Register the function that shows the login view; it resolves once a login succeeded. */
export function setLoginHandler(fn) {
  loginHandler = fn;
}

function csrfToken() {
  if (session.csrf) return session.csrf;
  const found = document.cookie.split('; ').find((c) => c.startsWith(`${CSRF_COOKIE}=`));
  return found ? decodeURIComponent(found.slice(CSRF_COOKIE.length + 1)) : null;
}

function needLogin() {
  if (!loginHandler) return Promise.reject(new ApiError(401, { title: 'Not logged in' }));
  pendingLogin = pendingLogin || loginHandler().finally(() => { pendingLogin = null; });
  return pendingLogin;
}

async function problemOf(res) {
  try {
    const type = res.headers.get('content-type') || '';
    if (type.includes('json')) return await res.json();
    const text = await res.text();
    return { title: `HTTP ${res.status}`, detail: text.slice(0, 300) };
  } catch {
    return { title: `HTTP ${res.status}` };
  }
}

/**
 * request('POST', '/api/runs', {json: body, headers: {...}}) -> parsed JSON (or text, or null on 204).
 * Options: json (a body to send as JSON), headers, accept, raw (return the Response), signal,
 * noLogin (a 401 is an error, not a login prompt).
 */
export async function request(method, path, opts = {}, retried = false) {
  const headers = new Headers(opts.headers || {});
  if (!headers.has('Accept')) headers.set('Accept', opts.accept || 'application/json');
  let body;
  if (opts.json !== undefined) {
    headers.set('Content-Type', 'application/json');
    body = JSON.stringify(opts.json);
  }
  if (!SAFE.has(method)) {
    const token = csrfToken();
    if (token) headers.set(CSRF_HEADER, token);
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body, credentials: 'same-origin', cache: 'no-store', signal: opts.signal });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, { title: 'The server does not answer', detail: `${method} ${path} could not be sent; is baton serve running?` });
  }
  const fresh = res.headers.get(CSRF_HEADER);
  if (fresh) session.csrf = fresh;
  if (res.status === 401 && !opts.noLogin && !retried) {
    session.principal = null;
    await needLogin();
    return request(method, path, opts, true);
  }
  if (res.status === 403 && !retried && !SAFE.has(method)) {
    const problem = await problemOf(res.clone());
    if (/csrf/i.test(`${problem.type || ''} ${problem.title || ''} ${problem.detail || ''}`)) {
      await loadSession();
      return request(method, path, opts, true);
    }
  }
  if (!res.ok) throw new ApiError(res.status, await problemOf(res));
  if (opts.raw) return res;
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

export const get = (path, opts) => request('GET', path, opts);
export const post = (path, json, opts = {}) => request('POST', path, { ...opts, json });

/** Learn whether this server has login, and who is logged in (a 401 here shows the login view). */
export async function loadSession() {
  try {
    const who = await request('GET', '/api/session');
    // via 'none': a server started with --insecure-no-auth (everyone is the same anonymous admin).
    session.auth = who && who.via === 'none' ? 'off' : 'on';
    session.principal = who;
    session.csrf = (who && (who.csrf_token || who.csrf)) || session.csrf;
  } catch (err) {
    if (err.status === 404 || err.status === 405) session.auth = 'off';
    else throw err;
  }
  return session;
}

/** Exchange a token for the session cookie; false when the token was refused. */
export async function login(token) {
  try {
    await request('POST', '/api/login', { json: { token }, noLogin: true });
  } catch (err) {
    if (err.status === 401 || err.status === 403 || err.status === 422) return false;
    throw err;
  }
  await loadSession();
  return true;
}

/** End the session (where the server has logout). */
export async function logout() {
  try {
    await request('POST', '/api/logout', { noLogin: true });
  } finally {
    session.principal = null;
    session.csrf = null;
  }
}
