// @ts-check
// Talking to arasuld: JSON over fetch with the session cookie (HttpOnly, set
// by POST /api/auth/login) and the CSRF double submit on state-changing
// requests; Server-Sent Events and the metrics WebSocket (cookies travel with
// both, so no token ever sits in page-readable storage).

/** An API error with the server's code and message. */
export class ApiError extends Error {
  /**
   * @param {number} status the HTTP status; 0: the box was not reached
   * @param {string | undefined} code
   * @param {string | undefined} message
   * @param {number} [retryAfter] seconds, from a 429's Retry-After
   */
  constructor(status, code, message, retryAfter) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || '';
    this.retryAfter = retryAfter;
  }
}

/** @type {() => void} */
let onUnauthorized = () => {};
/** @type {() => void} */
let onPasswordChange = () => {};

/**
 * Where a 401 / a forced password change sends the app.
 * @param {() => void} unauth
 * @param {() => void} mustChange
 */
export function setAuthHandlers(unauth, mustChange) {
  onUnauthorized = unauth;
  onPasswordChange = mustChange;
}

import { lang } from './i18n.js';

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)arasul_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : '';
}

/**
 * What api() takes: a body that is not FormData or a string goes as JSON.
 * @typedef {object} ApiOptions
 * @property {string} [method]
 * @property {Record<string, string>} [headers]
 * @property {any} [body]
 * @property {boolean} [noRedirect] a 401 / forced password change does not leave the screen
 * @property {AbortSignal} [signal]
 */

/**
 * fetch + JSON. Throws ApiError on any non-2xx; 401 also calls the
 * unauthorized handler (unless opts.noRedirect). The body is the server's
 * JSON, unchecked (`any`): each screen reads the fields it shows.
 * @param {string} path
 * @param {ApiOptions} [opts]
 * @returns {Promise<any>}
 */
export async function api(path, opts = {}) {
  const method = opts.method || 'GET';
  // Refusals with numbers (a model that does not fit) come in the page's language.
  /** @type {Record<string, string>} */
  const headers = { Accept: 'application/json', 'Accept-Language': lang(), ...(opts.headers || {}) };
  let body = opts.body;
  if (body !== undefined && !(body instanceof FormData) && typeof body !== 'string') {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(body);
  }
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf();
  let r;
  try {
    r = await fetch(path, { method, headers, body, credentials: 'same-origin', signal: opts.signal });
  } catch (e) {
    if (e instanceof Error && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', e instanceof Error ? e.message : String(e));
  }
  /** @type {any} */
  let data = null;
  const text = await r.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!r.ok) {
    const err = data && data.error ? data.error : {};
    const retry = Number(r.headers.get('Retry-After')) || undefined;
    const e = new ApiError(r.status, err.code, err.message, retry);
    if (r.status === 401 && !opts.noRedirect) onUnauthorized();
    if (r.status === 403 && e.code === 'password_change_required' && !opts.noRedirect) onPasswordChange();
    throw e;
  }
  return data;
}

/**
 * Like api() but resolves to null on 404 (a route that has not landed).
 * @param {string} path
 * @returns {Promise<any>}
 */
export async function optional(path) {
  try {
    return await api(path);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 405)) return null;
    throw e;
  }
}

/**
 * An EventSource with named handlers; returns a close function. EventSource
 * reconnects by itself; onState gets 'open' / 'reconnecting'.
 * @param {string} path
 * @param {Record<string, (data: string, ev: MessageEvent) => void>} handlers
 * @param {(state: 'open' | 'reconnecting' | 'closed') => void} [onState]
 * @returns {() => void}
 */
export function sse(path, handlers, onState = () => {}) {
  const es = new EventSource(path, { withCredentials: true });
  es.onopen = () => onState('open');
  es.onerror = () => onState(es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
  for (const [name, fn] of Object.entries(handlers)) {
    es.addEventListener(name, (ev) => fn(/** @type {MessageEvent} */ (ev).data, /** @type {MessageEvent} */ (ev)));
  }
  return () => es.close();
}

/**
 * Exponential backoff with full jitter: 1 s, 2 s, 4 s … capped at 30 s.
 * @param {number} attempt
 * @param {number} [base] ms
 * @param {number} [cap] ms
 */
export function backoff(attempt, base = 1000, cap = 30000) {
  const ceiling = Math.min(cap, base * 2 ** attempt);
  return Math.max(base, Math.round(ceiling / 2 + Math.random() * ceiling / 2));
}

/**
 * The metrics live stream: one JSON sample per message. Reconnects with
 * backoff() and reports 'connecting' | 'live' | 'reconnecting' (with the
 * delay in ms) through onState. Returns a stop function.
 * @param {(sample: any) => void} onSample
 * @param {(state: 'connecting' | 'live' | 'reconnecting', delay?: number) => void} onState
 * @returns {() => void}
 */
export function liveStream(onSample, onState) {
  /** @type {WebSocket | null} */
  let ws = null;
  let attempt = 0;
  /** @type {number | undefined} */
  let timer;
  let stopped = false;
  const connect = () => {
    if (stopped) return;
    onState('connecting');
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/metrics/live-stream`;
    ws = new WebSocket(url);
    ws.onopen = () => { attempt = 0; onState('live'); };
    ws.onmessage = (ev) => {
      try { onSample(JSON.parse(ev.data)); } catch { /* ignore a bad frame */ }
    };
    ws.onclose = () => {
      if (stopped) return;
      const delay = backoff(attempt++);
      onState('reconnecting', delay);
      timer = setTimeout(connect, delay);
    };
  };
  connect();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (ws) ws.close();
  };
}

/**
 * Multipart upload through XHR (fetch has no upload progress). onProgress
 * gets (loaded, total). Resolves with the JSON body; rejects with ApiError.
 * @param {string} path
 * @param {File} file
 * @param {(loaded: number, total: number) => void} onProgress
 * @param {string} [field]
 * @returns {Promise<any>}
 */
export function upload(path, file, onProgress, field = 'file') {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('X-CSRF-Token', csrf());
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      /** @type {any} */
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(data);
      const err = data && data.error ? data.error : {};
      if (xhr.status === 401) onUnauthorized();
      reject(new ApiError(xhr.status, err.code, err.message));
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'network error'));
    const fd = new FormData();
    fd.append(field, file);
    xhr.send(fd);
  });
}

