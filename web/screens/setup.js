// @ts-check
// The first-run setup, shown after the forced password change and opened
// again from Settings: the box's name on the LAN, the models to install
// (the suggestions say what each needs and whether it fits), whether
// self-healing may reboot the box; then the playground. Everything here is
// also a setting and an API call (PATCH /api/settings, /api/models/pulls).
import { api } from '../api.js';
import { t } from '../i18n.js';
import { h, card, errText } from '../ui.js';
import { downloads } from './downloads.js';
import { mountNotifications, notificationsTitle } from './notifications.js';

/** @type {import('../app.js').Mount} */
export function mount(root, params, { go }) {
  const [nameSec, nameBody] = card(t('setup.name_title'), 'setup-step-name');
  const [modelSec, modelBody] = card(t('setup.models_title'), 'setup-step-models');
  const [rebootSec, rebootBody] = card(t('setup.reboot_title'), 'setup-step-reboot');
  const [notifySec, notifyBody] = card(`4. ${notificationsTitle()}`, 'setup-step-notifications');
  [nameSec, modelSec, rebootSec, notifySec].forEach((s) => s.classList.add('wide'));
  const finishBtn = h('button', { type: 'button', class: 'primary', id: 'setup-finish' }, t('setup.finish'));
  const finishMsg = h('p', { class: 'form-msg', role: 'alert', id: 'setup-finish-msg' });
  root.append(h('h1', {}, t('setup.title')), h('p', {}, t('setup.intro')),
    h('div', { class: 'cards' }, nameSec, modelSec, rebootSec, notifySec), h('div', { class: 'row' }, finishBtn, finishMsg));

  // ---- 1. the name
  const name = h('input', { id: 'setup-name', autocomplete: 'off', pattern: '[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?', 'aria-describedby': 'setup-name-help' });
  const nameMsg = h('p', { class: 'form-msg', role: 'status', id: 'setup-name-msg' });
  const nameForm = h('form', { class: 'stack', id: 'setup-name-form' },
    h('div', { class: 'field' }, h('label', { for: 'setup-name' }, t('setup.name')), name,
      h('p', { class: 'muted small', id: 'setup-name-help' }, t('setup.name_help'))),
    h('button', { type: 'submit' }, t('setup.save')), nameMsg);
  nameForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    nameMsg.textContent = '';
    try {
      const r = await api('/api/settings', { method: 'PATCH', body: { box_name: name.value.trim() } });
      nameMsg.textContent = t('setup.name_saved', { n: `${r.setup.box_name}.local` });
    } catch (e) { nameMsg.textContent = errText(e); }
  });
  nameBody.append(nameForm);

  // ---- 2. models
  const dl = downloads(() => {});
  modelBody.append(h('p', {}, t('setup.models_why')), dl.el);

  // ---- 3. reboots
  const reboot = h('input', { type: 'checkbox', id: 'setup-reboot' });
  const rebootMsg = h('p', { class: 'form-msg', role: 'status', id: 'setup-reboot-msg' });
  reboot.addEventListener('change', async () => {
    rebootMsg.textContent = '';
    try {
      const r = await api('/api/settings', { method: 'PATCH', body: { reboot_allowed: reboot.checked } });
      rebootMsg.textContent = t(r.setup.reboot_allowed ? 'setup.reboot_on' : 'setup.reboot_off');
    } catch (e) { rebootMsg.textContent = errText(e); reboot.checked = !reboot.checked; }
  });
  rebootBody.append(h('p', {}, t('setup.reboot_why')),
    h('label', { class: 'check' }, reboot, ' ', t('setup.reboot')), rebootMsg);

  // ---- 4. notifications
  mountNotifications(notifyBody);

  finishBtn.addEventListener('click', async () => {
    try {
      await api('/api/setup/finish', { method: 'POST' });
      go('#/services?playground=1');
    } catch (e) { finishMsg.textContent = errText(e); }
  });

  api('/api/setup').then((s) => {
    name.value = s.box_name;
    reboot.checked = s.reboot_allowed;
    if (!s.writable) {
      [name, reboot].forEach((el) => { el.disabled = true; });
      nameMsg.textContent = t('setup.not_writable');
    }
  }).catch((e) => { nameMsg.textContent = errText(e); });
  return () => dl.stop();
}
