// @ts-check
// The change-password form with the policy from
// /api/auth/password-requirements checked live as the owner types.
import { api, ApiError } from '../api.js';
import { t } from '../i18n.js';
import { h, errText } from '../ui.js';

/**
 * GET /api/auth/password-requirements.
 * @typedef {{ min_length: number, max_length: number, history: number, rules: { code: string }[] }} Requirements
 */

/**
 * The rules the page can check as the owner types (the rest the box checks).
 * @type {Record<string, (p: string, r: Requirements) => boolean>}
 */
const CHECKS = {
  too_short: (p, r) => [...p].length >= r.min_length,
  too_long: (p, r) => [...p].length <= r.max_length,
  missing_uppercase: (p) => /\p{Lu}/u.test(p),
  missing_lowercase: (p) => /\p{Ll}/u.test(p),
  missing_digit: (p) => /[0-9]/.test(p),
  missing_special: (p) => /[^\p{L}\p{N}]/u.test(p),
};

/**
 * opts.current: the current password when already known (first login);
 * opts.onDone(): after a successful change; opts.onUnauthorized(): on a 401.
 * @param {{ current?: string | null, onDone: () => void, onUnauthorized?: () => void }} opts
 */
export function passwordForm(opts) {
  const status = h('p', { class: 'form-msg', role: 'alert', id: 'pw-msg' });
  const rules = h('ul', { class: 'rules', id: 'pw-rules', 'aria-live': 'polite' });
  const cur = h('input', { type: 'password', id: 'pw-current', name: 'current', autocomplete: 'current-password', required: true });
  const nw = h('input', { type: 'password', id: 'pw-new', name: 'new', autocomplete: 'new-password', required: true, 'aria-describedby': 'pw-rules' });
  const again = h('input', { type: 'password', id: 'pw-again', name: 'again', autocomplete: 'new-password', required: true });
  const submit = h('button', { type: 'submit', class: 'primary', id: 'pw-submit' }, t('pw.submit'));
  /** @type {Requirements | null} */
  let req = null;

  const render = () => {
    const r = req;
    if (!r) return;
    const p = nw.value;
    rules.replaceChildren(...r.rules.map((rule) => {
      const check = CHECKS[rule.code];
      let state = 'info';
      if (check) state = !p ? 'todo' : check(p, r) ? 'ok' : 'crit';
      const icon = { ok: '✓', crit: '✕', info: 'i', todo: '○' }[state];
      const word = { ok: t('pw.met'), crit: t('pw.unmet'), info: t('pw.checked'), todo: t('pw.todo') }[state];
      const text = t(`pw.rule.${rule.code}`, { n: rule.code === 'recently_used' ? r.history : rule.code === 'too_long' ? r.max_length : r.min_length });
      return h('li', { class: `rule ${state}`, 'data-rule': rule.code, 'data-state': state },
        h('span', { class: 'icon', 'aria-hidden': 'true' }, icon), ' ', text, h('span', { class: 'sr-only' }, ` (${word})`));
    }));
    const match = !again.value ? 'todo' : again.value === p ? 'ok' : 'crit';
    rules.append(h('li', { class: `rule ${match}`, 'data-rule': 'match', 'data-state': match },
      h('span', { class: 'icon', 'aria-hidden': 'true' }, { ok: '✓', crit: '✕', todo: '○' }[match]), ' ', t('pw.match')));
  };
  nw.addEventListener('input', render);
  again.addEventListener('input', render);
  api('/api/auth/password-requirements').then((r) => { req = r; render(); }).catch((e) => { status.textContent = errText(e); });

  const form = h('form', { class: 'stack', id: 'pw-form', novalidate: true },
    opts.current ? null : h('div', { class: 'field' }, h('label', { for: 'pw-current' }, t('pw.current')), cur),
    h('div', { class: 'field' }, h('label', { for: 'pw-new' }, t('pw.new')), nw),
    h('div', { class: 'field' }, h('label', { for: 'pw-again' }, t('pw.again')), again),
    h('p', { class: 'hint' }, t('pw.policy')),
    rules,
    status,
    submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    status.textContent = '';
    if (nw.value !== again.value) { status.textContent = t('pw.mismatch'); return; }
    submit.disabled = true;
    try {
      await api('/api/auth/change-password', {
        method: 'POST',
        body: { current_password: opts.current || cur.value, new_password: nw.value },
        noRedirect: true,
      });
      opts.onDone();
    } catch (e) {
      status.textContent = errText(e);
      if (e instanceof ApiError && e.status === 401) opts.onUnauthorized?.();
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
