// Settings: change the password (policy shown live), the live sessions,
// log out here or everywhere.
import { api } from '../api.js';
import { t } from '../i18n.js';
import { h, card, badge, confirmDialog, notify, errText, fmtTime } from '../ui.js';
import { passwordForm } from './password.js';

export function mount(root, params, { go, session }) {
  const [pwSec, pwBody] = card(t('set.password'), 'card-password');
  const [sesSec, sesBody] = card(t('set.sessions'), 'card-sessions');
  sesSec.classList.add('wide');
  root.append(h('h1', {}, t('nav.settings')), h('div', { class: 'cards' }, pwSec, sesSec));

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
