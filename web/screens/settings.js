// @ts-check
// Settings: change the password (policy shown live), the live sessions,
// log out here or everywhere, and the API keys for apps (made here, shown
// once with a copy button, revoked here).
import { api } from '../api.js';
import { t } from '../i18n.js';
import { h, card, badge, confirmDialog, notify, errText, fmtTime } from '../ui.js';
import { passwordForm } from './password.js';
import { mountBackups, title as backupsTitle } from './backups.js';
import { mountNotifications, notificationsTitle } from './notifications.js';

/** @type {import('../app.js').Mount} */
export function mount(root, params, { go, session }) {
  const [pwSec, pwBody] = card(t('set.password'), 'card-password');
  const [sesSec, sesBody] = card(t('set.sessions'), 'card-sessions');
  const [keySec, keyBody] = card(t('key.title'), 'card-keys');
  const [setupSec, setupBody] = card(t('setup.title'), 'card-setup');
  const [notifySec, notifyBody] = card(notificationsTitle(), 'card-notifications');
  sesSec.classList.add('wide');
  const [backupSec, backupBody] = card(backupsTitle(), 'card-backups');
  keySec.classList.add('wide');
  backupSec.classList.add('wide');
  notifySec.classList.add('wide');
  root.append(h('h1', {}, t('nav.settings')), h('div', { class: 'cards' }, pwSec, setupSec, backupSec, notifySec, sesSec, keySec));
  mountBackups(backupBody);
  mountNotifications(notifyBody);
  setupBody.append(h('p', {}, t('setup.again_why')), h('a', { class: 'button', id: 'setup-again', href: '#/setup' }, t('setup.again')));
  mountKeys(keyBody);

  const mountForm = () => pwBody.replaceChildren(passwordForm({
    onDone: () => { notify(t('set.changed'), 'ok'); mountForm(); sessions(); },
  }));
  mountForm();

  const list = h('div', { id: 'session-list' });
  const logoutAll = h('button', { type: 'button', class: 'danger', id: 'logout-all', onclick: async () => {
    if (!(await confirmDialog(t('set.confirm_all'), t('set.logout_all')))) return;
    try { await api('/api/auth/logout-all', { method: 'POST', noRedirect: true }); } catch { /* we are out either way */ }
    session.me = null;
    go('#/login');
  } }, t('set.logout_all'));
  const logoutHere = h('button', { type: 'button', class: 'secondary', id: 'logout-here', onclick: async () => {
    try { await api('/api/auth/logout', { method: 'POST', noRedirect: true }); } catch { /* gone anyway */ }
    session.me = null;
    go('#/login');
  } }, t('set.logout_here'));
  sesBody.append(list, h('div', { class: 'row' }, logoutHere, logoutAll));

  const sessions = async () => {
    try {
      /** @type {{ current: string, sessions: { jti: string, ip: string, user_agent?: string | null, created_at: string, last_activity: string, expires_at: string }[] }} */
      const r = await api('/api/auth/sessions');
      list.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'sessions-table' },
        h('thead', {}, h('tr', {}, ['set.ip', 'set.agent', 'set.created', 'set.active', 'set.expires'].map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, r.sessions.map((s) => h('tr', { 'data-current': s.jti === r.current ? 'yes' : 'no' },
          h('th', { scope: 'row' }, s.ip, s.jti === r.current ? [' ', badge('info', t('set.this'))] : null),
          h('td', { class: 'small' }, s.user_agent || '—'),
          h('td', {}, fmtTime(s.created_at)), h('td', {}, fmtTime(s.last_activity)), h('td', {}, fmtTime(s.expires_at))))))));
    } catch (e) { list.replaceChildren(h('p', { class: 'error' }, errText(e))); }
  };
  sessions();
  return () => {};
}

const SCOPES = ['llm', 'embeddings', 'metrics', 'admin'];
const EXPIRY_DAYS = [0, 30, 90, 365];

/**
 * The API keys card: a form to make one, the key shown once, the list.
 * @param {HTMLElement} body
 */
function mountKeys(body) {
  const name = h('input', { id: 'key-name', name: 'key-name', maxlength: 64, required: true, autocomplete: 'off' });
  const scopes = SCOPES.map((s) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', id: `key-scope-${s}`, value: s, checked: s === 'llm' }), ` ${t(`key.scope.${s}`)}`));
  const expiry = h('select', { id: 'key-expiry' }, EXPIRY_DAYS.map((d) => h('option', { value: String(d) }, d ? t('key.days', { n: d }) : t('key.never'))));
  const msg = h('p', { class: 'form-msg', role: 'alert', id: 'key-msg' });
  const shown = h('div', { id: 'key-shown' });
  const list = h('div', { id: 'key-list' });
  const form = h('form', { class: 'stack', id: 'key-form', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'key-name' }, t('key.name')), name),
    h('fieldset', { class: 'field' }, h('legend', {}, t('key.scopes')), ...scopes),
    h('div', { class: 'field' }, h('label', { for: 'key-expiry' }, t('key.expiry')), expiry),
    msg, h('button', { type: 'submit', class: 'primary', id: 'key-create' }, t('key.create')));
  body.append(h('p', { class: 'hint' }, t('key.hint', { url: `${location.origin}/ollama/v1` })), form, shown, list);

  const refresh = async () => {
    try {
      /** @type {{ keys: { id: number, name: string, scopes: string[], hint: string, created_at: string, last_used_at?: string | null, expires_at?: string | null }[] }} */
      const r = await api('/api/keys');
      if (!r.keys.length) { list.replaceChildren(h('p', { class: 'muted' }, t('key.none'))); return; }
      list.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'keys-table' },
        h('thead', {}, h('tr', {}, ['key.name', 'key.scopes', 'key.key', 'key.created', 'key.used', 'key.expires', 'key.action'].map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, r.keys.map((k) => h('tr', { 'data-key-id': String(k.id) },
          h('th', { scope: 'row' }, k.name),
          h('td', {}, k.scopes.map((s) => t(`key.scope.${s}`)).join(', ')),
          h('td', { class: 'small mono' }, `${k.hint}…`),
          h('td', {}, fmtTime(k.created_at)),
          h('td', {}, k.last_used_at ? fmtTime(k.last_used_at) : t('key.unused')),
          h('td', {}, k.expires_at ? fmtTime(k.expires_at) : t('key.never')),
          h('td', {}, h('button', { type: 'button', class: 'danger small', 'aria-label': t('key.revoke_named', { name: k.name }), onclick: async () => {
            if (!(await confirmDialog(t('key.confirm_revoke', { name: k.name }), t('key.revoke')))) return;
            try {
              await api(`/api/keys/${k.id}`, { method: 'DELETE' });
              notify(t('key.revoked', { name: k.name }), 'ok');
            } catch (e) { notify(errText(e), 'crit'); }
            refresh();
          } }, t('key.revoke')))))))));
    } catch (e) { list.replaceChildren(h('p', { class: 'error' }, errText(e))); }
  };

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.textContent = '';
    const chosen = scopes.map((l) => /** @type {HTMLInputElement} */ (l.querySelector('input'))).filter((i) => i.checked).map((i) => i.value);
    if (!name.value.trim()) { msg.textContent = t('key.need_name'); name.focus(); return; }
    if (!chosen.length) { msg.textContent = t('key.need_scope'); return; }
    const days = Number(expiry.value);
    /** @type {{ name: string, scopes: string[], expires_at?: string }} */
    const req = { name: name.value.trim(), scopes: chosen };
    if (days) req.expires_at = new Date(Date.now() + days * 86400e3).toISOString();
    try {
      const r = await api('/api/keys', { method: 'POST', body: req });
      const value = h('input', { id: 'key-new', readonly: true, value: r.key, 'aria-label': t('key.new_label'), class: 'mono' });
      const copy = h('button', { type: 'button', class: 'secondary', id: 'key-copy', onclick: async () => {
        value.select();
        try { await navigator.clipboard.writeText(r.key); } catch { document.execCommand('copy'); }
        notify(t('key.copied'), 'ok');
      } }, t('key.copy'));
      shown.replaceChildren(h('div', { class: 'key-once', role: 'status' },
        h('p', {}, h('strong', {}, t('key.once'))), h('div', { class: 'row' }, value, copy)));
      name.value = '';
      refresh();
    } catch (e) { msg.textContent = errText(e); }
  });
  refresh();
}
