// @ts-check
// Notifications: where the box's alerts go (e-mail, ntfy push, webhook),
// the least severity each channel is sent, the de-dup window and quiet
// hours, a "Send a test" per channel, and the newest alerts with how each
// channel took them. Used in Settings and as a step of the setup. Every
// change is one PUT /api/notifications; credentials are write-only here.
import { api } from '../api.js';
import { strings } from '../i18n.js';
import { h, badge, notify, errText, fmtTime } from '../ui.js';

const S = {
  en: {
    title: 'Notifications', hint: 'The box tells you when something needs you: a service that failed, an update, a full disk, heat, a locked-out login.',
    none: 'No channel yet: alerts are only shown here.', name: 'Name', kind: 'Type', min: 'At least', cred: 'Secret', action: 'Action',
    test: 'Send a test', remove: 'Remove', tested: 'Test sent through {n}.', set: 'set', unset: 'not set',
    add: 'Add a channel', save: 'Save', saved: 'Saved.', email: 'E-mail', ntfy: 'Push (ntfy)', webhook: 'Webhook',
    host: 'SMTP server', port: 'Port', security: 'Encryption', user: 'User name', password: 'Password', from: 'From', to: 'To (comma-separated)',
    url: 'URL', secret: 'Signing secret (optional)', server: 'ntfy server', topic: 'Topic', token: 'Access token (optional)',
    keep: 'leave empty to keep', window: 'Same alert at most once per', quiet: 'Quiet hours (e.g. 22:00-07:00; critical alerts still go)',
    recent: 'Latest alerts', nothing: 'Nothing sent yet.', offline: 'The database is down: the latest alerts show again once it is back.',
    INFO: 'Info', WARNING: 'Warning', CRITICAL: 'Critical', delivered: 'sent', pending: 'waiting', failed: 'failed',
  },
  de: {
    title: 'Benachrichtigungen', hint: 'Das Gerät meldet sich, wenn es dich braucht: ein ausgefallener Dienst, ein Update, eine volle Platte, Hitze, eine gesperrte Anmeldung.',
    none: 'Noch kein Kanal: Meldungen erscheinen nur hier.', name: 'Name', kind: 'Art', min: 'Ab', cred: 'Geheimnis', action: 'Aktion',
    test: 'Test senden', remove: 'Entfernen', tested: 'Test über {n} gesendet.', set: 'gesetzt', unset: 'nicht gesetzt',
    add: 'Kanal hinzufügen', save: 'Speichern', saved: 'Gespeichert.', email: 'E-Mail', ntfy: 'Push (ntfy)', webhook: 'Webhook',
    host: 'SMTP-Server', port: 'Port', security: 'Verschlüsselung', user: 'Benutzername', password: 'Passwort', from: 'Absender', to: 'An (durch Komma getrennt)',
    url: 'URL', secret: 'Signatur-Geheimnis (optional)', server: 'ntfy-Server', topic: 'Thema', token: 'Zugangs-Token (optional)',
    keep: 'leer lassen zum Behalten', window: 'Gleiche Meldung höchstens einmal pro', quiet: 'Ruhezeit (z. B. 22:00-07:00; kritische Meldungen kommen trotzdem)',
    recent: 'Letzte Meldungen', nothing: 'Noch nichts gesendet.', offline: 'Die Datenbank ist nicht erreichbar: die letzten Meldungen erscheinen wieder, sobald sie zurück ist.',
    INFO: 'Info', WARNING: 'Warnung', CRITICAL: 'Kritisch', delivered: 'gesendet', pending: 'wartet', failed: 'fehlgeschlagen',
  },
};
const tr = strings(S);
const SEVERITIES = ['INFO', 'WARNING', 'CRITICAL'];
/** @type {Record<string, import('../ui.js').Level>} */
const LEVEL = { INFO: 'info', WARNING: 'warn', CRITICAL: 'crit', delivered: 'ok', pending: 'info', failed: 'crit' };

/**
 * A channel as PUT /api/notifications takes it: one of email, ntfy or
 * webhook, and the credential only when it changes.
 * @typedef {object} ChannelUpdate
 * @property {string} name
 * @property {string} min_severity
 * @property {{ host: string, port: number, security: string, from: string, to: string[], username?: string }} [email]
 * @property {{ server: string, topic: string }} [ntfy]
 * @property {{ url: string }} [webhook]
 * @property {string} [credential]
 */
/**
 * A channel as GET /api/notifications shows it (the credential only as
 * "set").
 * @typedef {ChannelUpdate & { kind: string, credential_set: boolean }} Channel
 */
/**
 * GET/PUT /api/notifications.
 * @typedef {object} NotificationSettings
 * @property {Channel[]} channels
 * @property {string} dedup_window
 * @property {string | null} quiet_hours
 * @property {boolean} outbox_available
 * @property {{ severity: string, title: string, created_at: string, deliveries: { channel: string, status: string }[] }[]} outbox
 */

/**
 * What the API's channel view becomes in a PUT (credential kept).
 * @param {Channel} c
 * @returns {ChannelUpdate}
 */
function asUpdate(c) {
  /** @type {ChannelUpdate} */
  const u = { name: c.name, min_severity: c.min_severity };
  for (const k of /** @type {const} */ (['webhook', 'ntfy', 'email'])) if (c[k]) u[k] = /** @type {any} */ (c[k]);
  return u;
}

/**
 * @param {string} id
 * @param {string} label
 * @param {HTMLElement} input
 */
function field(id, label, input) {
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input);
}

/**
 * Mounts the notifications card into `body`; returns a stop function.
 * @param {HTMLElement} body
 */
export function mountNotifications(body) {
  const msg = h('p', { class: 'form-msg', role: 'alert', id: 'notify-msg' });
  const list = h('div', { id: 'notify-channels' });
  const recent = h('div', { id: 'notify-recent' });
  /** @type {NotificationSettings} */
  let current;

  /**
   * @param {ChannelUpdate[]} channels
   * @param {{ dedup_window?: string, quiet_hours?: string | null }} [extra]
   */
  const put = async (channels, extra = {}) => {
    msg.textContent = '';
    const payload = { channels, dedup_window: current.dedup_window, quiet_hours: current.quiet_hours, ...extra };
    current = await api('/api/notifications', { method: 'PUT', body: payload });
    render();
  };

  // ---- the add form
  const kind = h('select', {}, ['email', 'ntfy', 'webhook'].map((k) => h('option', { value: k }, tr(k))));
  const min = h('select', {}, SEVERITIES.map((s) => h('option', { value: s, selected: s === 'WARNING' }, tr(s))));
  const name = h('input', { maxlength: 32, pattern: '[a-z0-9-]{1,32}', autocomplete: 'off', value: 'mail' });
  /** @type {Record<string, HTMLInputElement | HTMLSelectElement>} */
  const inputs = {
    host: h('input', { autocomplete: 'off' }), port: h('input', { type: 'number', min: 1, max: 65535, value: '587' }),
    security: h('select', {}, ['starttls', 'tls', 'none'].map((s) => h('option', { value: s }, s))),
    user: h('input', { autocomplete: 'off' }), password: h('input', { type: 'password', autocomplete: 'new-password' }),
    from: h('input', { type: 'email', autocomplete: 'off' }), to: h('input', { autocomplete: 'off' }),
    url: h('input', { type: 'url', autocomplete: 'off' }), secret: h('input', { type: 'password', autocomplete: 'new-password' }),
    server: h('input', { type: 'url', value: 'https://ntfy.sh' }), topic: h('input', { autocomplete: 'off' }),
    token: h('input', { type: 'password', autocomplete: 'new-password' }),
  };
  const groups = {
    email: h('div', { class: 'stack' }, field('notify-host', tr('host'), inputs.host), field('notify-port', tr('port'), inputs.port),
      field('notify-security', tr('security'), inputs.security), field('notify-user', tr('user'), inputs.user),
      field('notify-password', tr('password'), inputs.password), field('notify-from', tr('from'), inputs.from), field('notify-to', tr('to'), inputs.to)),
    ntfy: h('div', { class: 'stack' }, field('notify-server', tr('server'), inputs.server), field('notify-topic', tr('topic'), inputs.topic),
      field('notify-token', tr('token'), inputs.token)),
    webhook: h('div', { class: 'stack' }, field('notify-url', tr('url'), inputs.url), field('notify-secret', tr('secret'), inputs.secret)),
  };
  const showKind = () => {
    for (const [k, g] of Object.entries(groups)) g.style.display = k === kind.value ? '' : 'none';
    if (!name.value || ['mail', 'phone', 'hook'].includes(name.value)) name.value = /** @type {Record<string, string>} */ ({ email: 'mail', ntfy: 'phone', webhook: 'hook' })[kind.value];
  };
  kind.addEventListener('change', showKind);
  const form = h('form', { class: 'stack', id: 'notify-form', novalidate: true },
    h('h3', {}, tr('add')), field('notify-kind', tr('kind'), kind), field('notify-name', tr('name'), name), field('notify-min', tr('min'), min),
    groups.email, groups.ntfy, groups.webhook, h('button', { type: 'submit', class: 'primary', id: 'notify-add' }, tr('save')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    /** @type {ChannelUpdate} */
    const c = { name: name.value.trim(), min_severity: min.value };
    /** @param {string} k */
    const v = (k) => inputs[k].value.trim();
    if (kind.value === 'email') {
      c.email = { host: v('host'), port: Number(v('port')) || 587, security: v('security'), from: v('from'),
        to: v('to').split(',').map((s) => s.trim()).filter(Boolean) };
      if (v('user')) c.email.username = v('user');
      if (inputs.password.value) c.credential = inputs.password.value;
    } else if (kind.value === 'ntfy') {
      c.ntfy = { server: v('server'), topic: v('topic') };
      if (inputs.token.value) c.credential = inputs.token.value;
    } else {
      c.webhook = { url: v('url') };
      if (inputs.secret.value) c.credential = inputs.secret.value;
    }
    try {
      const others = current.channels.filter((x) => x.name !== c.name).map(asUpdate);
      await put([...others, c]);
      inputs.password.value = ''; inputs.secret.value = ''; inputs.token.value = '';
      msg.textContent = tr('saved');
    } catch (e) { msg.textContent = errText(e); }
  });

  // ---- window and quiet hours
  const windowIn = h('input', { id: 'notify-window', size: 6 });
  const quietIn = h('input', { id: 'notify-quiet', placeholder: '22:00-07:00', size: 12 });
  const rules = h('form', { class: 'row', id: 'notify-rules' },
    h('label', { for: 'notify-window' }, tr('window')), windowIn,
    h('label', { for: 'notify-quiet' }, tr('quiet')), quietIn, h('button', { type: 'submit' }, tr('save')));
  rules.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await put(current.channels.map(asUpdate), { dedup_window: windowIn.value.trim(), quiet_hours: quietIn.value.trim() || null });
      msg.textContent = tr('saved');
    } catch (e) { msg.textContent = errText(e); }
  });

  const render = () => {
    windowIn.value = current.dedup_window;
    quietIn.value = current.quiet_hours || '';
    if (!current.channels.length) list.replaceChildren(h('p', { class: 'muted' }, tr('none')));
    else list.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'notify-table' },
      h('thead', {}, h('tr', {}, ['name', 'kind', 'min', 'cred', 'action'].map((k) => h('th', { scope: 'col' }, tr(k))))),
      h('tbody', {}, current.channels.map((c) => h('tr', { 'data-channel': c.name },
        h('th', { scope: 'row' }, c.name), h('td', {}, tr(c.kind)), h('td', {}, badge(LEVEL[c.min_severity], tr(c.min_severity))),
        h('td', {}, c.credential_set ? tr('set') : tr('unset')),
        h('td', { class: 'row' },
          h('button', { type: 'button', class: 'secondary', id: `notify-test-${c.name}`, onclick: async (/** @type {MouseEvent} */ ev) => {
            const button = /** @type {HTMLButtonElement} */ (ev.target);
            button.disabled = true;
            try { await api('/api/notifications/test', { method: 'POST', body: { channel: c.name } }); notify(tr('tested', { n: c.name }), 'ok'); } catch (e) { notify(errText(e), 'crit'); }
            button.disabled = false;
          } }, tr('test')),
          h('button', { type: 'button', class: 'danger', onclick: async () => {
            try { await put(current.channels.filter((x) => x.name !== c.name).map(asUpdate)); } catch (e) { msg.textContent = errText(e); }
          } }, tr('remove')))))))));
    const rows = current.outbox.slice(0, 10);
    recent.replaceChildren(h('h3', {}, tr('recent')),
      !current.outbox_available ? h('p', { class: 'muted' }, tr('offline'))
        : !rows.length ? h('p', { class: 'muted' }, tr('nothing'))
          : h('ul', { class: 'plain', id: 'notify-outbox' }, rows.map((e) => h('li', {},
            badge(LEVEL[e.severity], tr(e.severity)), ' ', h('strong', {}, e.title), ' ', h('span', { class: 'muted small' }, fmtTime(e.created_at)), ' ',
            e.deliveries.map((d) => [' ', badge(LEVEL[d.status], `${d.channel}: ${tr(d.status)}`)])))));
  };

  body.append(h('p', { class: 'hint' }, tr('hint')), list, rules, msg, form, recent);
  showKind();
  api('/api/notifications').then((r) => { current = r; render(); }).catch((e) => { msg.textContent = errText(e); });
  return () => {};
}

export const notificationsTitle = () => tr('title');
