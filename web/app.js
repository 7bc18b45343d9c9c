// @ts-check
// The shell: hash routes, the navigation, the language switch and the
// session. Each screen module exports mount(root) → cleanup function.
import { api, setAuthHandlers, ApiError } from './api.js';
import { t, lang, setLang, LANGS } from './i18n.js';
import { h, clear, labelTables } from './ui.js';
import * as login from './screens/login.js';
import * as overview from './screens/overview.js';
import * as services from './screens/services.js';
import * as healing from './screens/healing.js';
import * as updates from './screens/updates.js';
import * as logs from './screens/logs.js';
import * as settings from './screens/settings.js';
import * as setup from './screens/setup.js';

/**
 * The logged-in user (/api/auth/me), and the current password while a
 * forced change needs it.
 * @typedef {{ me: { must_change_password?: boolean, [k: string]: any } | null, currentPassword: string | null }} Session
 */
/**
 * What every screen's mount() gets after the root and the hash's query.
 * @typedef {{ session: Session, go: (hash: string) => void, guest?: boolean }} ScreenContext
 */
/** @typedef {(root: HTMLElement, params: URLSearchParams, ctx: ScreenContext) => () => void} Mount */

/** @type {Record<string, { mount: Mount }>} */
const SCREENS = { overview, services, healing, updates, logs, settings, setup };
const NAV = ['overview', 'services', 'healing', 'updates', 'logs', 'settings'];

/**
 * An element index.html always has.
 * @param {string} id
 */
function pageElement(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`index.html has no #${id}`);
  return el;
}

/** @type {(() => void) | null} */
let cleanup = null;
// On the first load Tab should start at the skip link; later route changes
// move focus to the new content (what a page load would do for a screen reader).
let firstRoute = true;
/** @type {Session} */
export const session = { me: null, currentPassword: null };

// Sent here by the front door (`/?next=/n8n/…` when an app behind it needs
// the login): once logged in, back there. Only the app paths, never another site.
const appNext = (() => {
  const n = new URLSearchParams(location.search).get('next');
  return n && /^\/(n8n|minio)\/[^\\]*$/.test(n) ? n : null;
})();

/** After a login (or with a session already): the app that sent us, if any. */
export function leaveForApp() {
  if (!appNext) return false;
  location.assign(appNext);
  return true;
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?');
  return { name: path || 'overview', params: new URLSearchParams(query || '') };
}

/** @param {string} hash */
export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

/** Whether the status routes answer without a login. */
async function statusIsPublic() {
  try {
    await api('/api/system/status', { noRedirect: true });
    return true;
  } catch (e) {
    return !(e instanceof ApiError) || (e.status !== 401 && e.status !== 403);
  }
}

/** Back to login, remembering where we were. */
function toLogin() {
  const { name } = parseHash();
  if (name === 'login') return;
  session.me = null;
  const next = location.hash && !location.hash.startsWith('#/login') ? location.hash : '#/overview';
  go(`#/login?next=${encodeURIComponent(next)}`);
}

function toPasswordChange() {
  const { name } = parseHash();
  if (name === 'login') return;
  go(`#/login?change=1&next=${encodeURIComponent(location.hash || '#/overview')}`);
}

/** @param {string} active the screen's name */
function shell(active) {
  const header = pageElement('top');
  clear(header);
  const loggedIn = !!session.me;
  const nav = h('nav', { 'aria-label': t('nav.label') },
    h('ul', {}, NAV.map((n) => h('li', {},
      h('a', { href: `#/${n}`, 'aria-current': n === active ? 'page' : false, 'data-nav': n }, t(`nav.${n}`))))));
  const langSel = h('select', { id: 'lang', 'aria-label': t('nav.language'), onchange: () => { setLang(langSel.value); route(); } },
    LANGS.map((l) => h('option', { value: l, selected: l === lang() }, l.toUpperCase())));
  const logout = h('button', { type: 'button', class: 'secondary', id: 'logout', onclick: doLogout }, t('nav.logout'));
  const login = h('a', { class: 'button', id: 'login-link', href: `#/login?next=${encodeURIComponent(`#/${active}`)}` }, t('nav.login'));
  header.append(
    h('a', { class: 'brand', href: '#/overview' }, h('span', { 'aria-hidden': 'true' }, '◆ '), 'Arasul'),
    loggedIn && active !== 'login' ? nav : h('span'),
    h('div', { class: 'tools' }, langSel, active === 'login' ? null : loggedIn ? logout : login));
  document.documentElement.lang = lang();
  const skip = document.querySelector('.skip');
  if (skip) skip.textContent = t('common.skip');
  document.title = `${t(`nav.${active}`)} · Arasul`;
}

async function doLogout() {
  try { await api('/api/auth/logout', { method: 'POST', noRedirect: true }); } catch { /* gone anyway */ }
  session.me = null;
  go('#/login');
}

async function ensureSession() {
  if (session.me) return session.me;
  try {
    session.me = await api('/api/auth/me', { noRedirect: true });
  } catch (e) {
    session.me = null;
    if (!(e instanceof ApiError) || e.status !== 401) throw e;
  }
  return session.me;
}

export async function route() {
  if (cleanup) { try { cleanup(); } catch { /* ignore */ } cleanup = null; }
  const { name, params } = parseHash();
  const main = pageElement('main');
  if (name === 'login') {
    await ensureSession().catch(() => null);
    shell('login');
    clear(main);
    cleanup = login.mount(main, params, { session, go });
    return;
  }
  const screen = SCREENS[name];
  if (!screen) return go('#/overview');
  let me;
  try {
    me = await ensureSession();
  } catch (e) {
    clear(main).append(h('p', { class: 'error', role: 'alert' }, t('err.network')));
    return;
  }
  if (!me) {
    // The overview is for anyone while the status routes are public
    // (http.require_auth_for_status off); every action still needs the login.
    // Not when an app behind the front door sent us here for the login.
    if (name === 'overview' && !appNext && await statusIsPublic()) {
      shell(name);
      clear(main);
      cleanup = screen.mount(main, params, { session, go, guest: true });
      return;
    }
    return toLogin();
  }
  if (me.must_change_password) return toPasswordChange();
  if (leaveForApp()) return;
  shell(name);
  clear(main);
  if (!firstRoute) main.focus({ preventScroll: true });
  firstRoute = false;
  cleanup = screen.mount(main, params, { session, go });
}

setAuthHandlers(toLogin, toPasswordChange);
// Label table cells for the stacked narrow-screen layout whenever a screen
// re-renders one.
const mainEl = pageElement('main');
new MutationObserver(() => labelTables(mainEl)).observe(mainEl, { childList: true, subtree: true });
// The skip link must not touch the hash (the router owns it).
document.querySelector('.skip')?.addEventListener('click', (ev) => {
  ev.preventDefault();
  mainEl.focus();
});
window.addEventListener('hashchange', route);
route();
