// @ts-check
// Login, and the forced password change after the first login.
import { api, ApiError } from '../api.js';
import { t } from '../i18n.js';
import { h, errText } from '../ui.js';
import { passwordForm } from './password.js';
import { leaveForApp } from '../app.js';

/** @type {import('../app.js').Mount} */
export function mount(root, params, { session, go }) {
  const next = params.get('next') || '#/overview';
  /** @type {number | undefined} */
  let lockTimer;
  const box = h('div', { class: 'login-box' });
  root.append(box);

  /** @param {string | null} current the password just typed, when known */
  const showChange = (current) => {
    box.replaceChildren(
      h('h1', {}, t('login.change_title')),
      h('p', {}, t('login.change_why')),
      passwordForm({
        current,
        onDone: async () => {
          session.me = null;
          session.me = await api('/api/auth/me');
          if (leaveForApp()) return;
          // A new box: the setup wizard next, until it is finished.
          const s = await api('/api/setup').catch(() => null);
          go(s && !s.finished ? '#/setup' : next);
        },
        onUnauthorized: () => showLogin(),
      }));
    box.querySelector('input')?.focus();
  };

  const showLogin = () => {
    const user = h('input', { id: 'login-user', name: 'username', autocomplete: 'username', value: 'admin', required: true });
    const pass = h('input', { id: 'login-pass', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
    const msg = h('p', { class: 'form-msg', role: 'alert', id: 'login-msg' });
    const btn = h('button', { type: 'submit', class: 'primary', id: 'login-submit' }, t('login.submit'));
    const form = h('form', { class: 'stack', id: 'login-form', novalidate: true },
      h('div', { class: 'field' }, h('label', { for: 'login-user' }, t('login.user')), user),
      h('div', { class: 'field' }, h('label', { for: 'login-pass' }, t('login.pass')), pass),
      msg, btn);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      msg.textContent = '';
      if (!pass.value) { msg.textContent = t('login.empty'); pass.focus(); return; }
      btn.disabled = true;
      btn.textContent = t('login.busy');
      try {
        const r = await api('/api/auth/login', { method: 'POST', body: { username: user.value, password: pass.value }, noRedirect: true });
        session.me = null;
        if (r.must_change_password) {
          showChange(pass.value);
          return;
        }
        session.me = await api('/api/auth/me');
        if (!leaveForApp()) go(next);
      } catch (e) {
        const status = e instanceof ApiError ? e.status : 0;
        if (status === 401) msg.textContent = t('login.invalid');
        else if (e instanceof ApiError && status === 429) {
          let left = e.retryAfter || 60;
          const tick = () => {
            msg.textContent = t('login.locked', { s: left });
            if (left-- <= 0) { clearInterval(lockTimer); msg.textContent = t('login.unlocked'); btn.disabled = false; }
          };
          btn.disabled = true;
          tick();
          lockTimer = setInterval(tick, 1000);
          return;
        } else msg.textContent = errText(e);
        pass.select();
      } finally {
        if (!lockTimer) btn.disabled = false;
        btn.textContent = t('login.submit');
      }
    });
    box.replaceChildren(h('h1', {}, t('login.title')), h('p', { class: 'hint' }, t('login.hint')), form);
    pass.focus();
  };

  if (params.get('change') && session.me && session.me.must_change_password) showChange(null);
  else showLogin();
  return () => clearInterval(lockTimer);
}
