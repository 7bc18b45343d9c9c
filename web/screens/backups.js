// @ts-check
// Backups (a card in Settings): the last good backup and its age, "back up
// now", the list with sizes, restore with a confirmation, and where the
// daily backup goes (this box / a USB stick by its name / an S3 bucket).
import { api } from '../api.js';
import { strings } from '../i18n.js';
import { h, badge, confirmDialog, notify, errText, fmtTime, fmtBytes, fmtDuration } from '../ui.js';

const TEXT = {
  en: {
    title: 'Backups', last: 'Last good backup', none: 'There is no good backup yet.', ago: '{d} ago',
    overdue: 'Overdue: the last good backup is more than 2 days old.', now: 'Back up now', running: 'Backing up…',
    done: 'Backup written and checked ({s}).', list: 'Backups and restores', when: 'When', kind: 'What', status: 'Result', size: 'Size',
    where: 'Where', action: 'Action', restore: 'Restore', confirm: 'Put the backup of {t} back? The box takes a safety backup first; services stop for a moment.',
    restored: 'The backup was put back.', restoring: 'Restoring…', daily: 'Back up daily at', dest: 'Destination',
    local: 'This box', usb: 'USB stick', s3: 'S3 bucket', label: 'Name (label) of the stick', endpoint: 'S3 address', bucket: 'Bucket',
    region: 'Region', prefix: 'Folder (prefix)', keys: 'The S3 keys are files in the secrets folder: s3-backup-access-key and s3-backup-secret-key.',
    save: 'Save', saved: 'Backup settings saved.', next: 'Next run', off: 'off',
    k_backup: 'Backup', k_restore: 'Restore', s_good: 'good', s_failed: 'failed', s_unverified: 'not verified', s_running: 'running',
  },
  de: {
    title: 'Datensicherung', last: 'Letzte gute Sicherung', none: 'Es gibt noch keine gute Sicherung.', ago: 'vor {d}',
    overdue: 'Überfällig: die letzte gute Sicherung ist älter als 2 Tage.', now: 'Jetzt sichern', running: 'Sichere…',
    done: 'Sicherung geschrieben und geprüft ({s}).', list: 'Sicherungen und Wiederherstellungen', when: 'Wann', kind: 'Was', status: 'Ergebnis', size: 'Größe',
    where: 'Wo', action: 'Aktion', restore: 'Wiederherstellen', confirm: 'Die Sicherung vom {t} zurückspielen? Die Box sichert vorher den jetzigen Stand; Dienste halten kurz an.',
    restored: 'Die Sicherung wurde zurückgespielt.', restoring: 'Stelle wieder her…', daily: 'Täglich sichern um', dest: 'Ziel',
    local: 'Diese Box', usb: 'USB-Stick', s3: 'S3-Bucket', label: 'Name (Bezeichnung) des Sticks', endpoint: 'S3-Adresse', bucket: 'Bucket',
    region: 'Region', prefix: 'Ordner (Präfix)', keys: 'Die S3-Schlüssel liegen als Dateien im Secrets-Ordner: s3-backup-access-key und s3-backup-secret-key.',
    save: 'Speichern', saved: 'Einstellungen gespeichert.', next: 'Nächster Lauf', off: 'aus',
    k_backup: 'Sicherung', k_restore: 'Wiederherstellung', s_good: 'gut', s_failed: 'fehlgeschlagen', s_unverified: 'nicht geprüft', s_running: 'läuft',
  },
};

const tr = strings(TEXT);

/** @type {Record<string, import('../ui.js').Level>} */
const LEVEL = { good: 'ok', failed: 'crit', unverified: 'warn', running: 'info' };

export function title() { return tr('title'); }

/** @param {HTMLElement} body */
export function mountBackups(body) {
  const summary = h('div', { id: 'backup-summary' });
  const list = h('div', { id: 'backup-list' });
  const nowBtn = h('button', { type: 'button', class: 'primary', id: 'backup-now' }, tr('now'));
  const form = h('form', { class: 'stack', id: 'backup-settings', novalidate: true });
  body.append(summary, h('div', { class: 'row' }, nowBtn), form, list);

  /**
   * @param {string} id
   * @param {string} label
   * @param {HTMLElement} input
   */
  const field = (id, label, input) => h('div', { class: 'field' }, h('label', { for: id }, label), input);
  const daily = h('input', { type: 'checkbox', id: 'backup-daily' });
  const at = h('input', { type: 'time', id: 'backup-at', required: true, 'aria-label': tr('daily') });
  const dest = h('select', { id: 'backup-dest' }, ['local', 'usb', 's3'].map((d) => h('option', { value: d }, tr(d))));
  const label = h('input', { id: 'backup-usb-label', autocomplete: 'off', maxlength: 64 });
  /** @type {Record<string, HTMLInputElement>} */
  const s3 = { endpoint: h('input', { id: 'backup-s3-endpoint', type: 'url' }), bucket: h('input', { id: 'backup-s3-bucket' }),
    region: h('input', { id: 'backup-s3-region' }), prefix: h('input', { id: 'backup-s3-prefix' }) };
  const usbBox = h('div', { id: 'backup-usb' }, field('backup-usb-label', tr('label'), label));
  const s3Box = h('div', { id: 'backup-s3' }, ...['endpoint', 'bucket', 'region', 'prefix'].map((k) => field(`backup-s3-${k}`, tr(k), s3[k])),
    h('p', { class: 'hint' }, tr('keys')));
  const msg = h('p', { class: 'form-msg', role: 'alert', id: 'backup-msg' });
  form.append(
    h('div', { class: 'row' }, h('label', { class: 'check' }, daily, ` ${tr('daily')}`), at),
    field('backup-dest', tr('dest'), dest), usbBox, s3Box, msg,
    h('button', { type: 'submit', class: 'secondary', id: 'backup-save' }, tr('save')));
  const showDest = () => { usbBox.hidden = dest.value !== 'usb'; s3Box.hidden = dest.value !== 's3'; };
  dest.addEventListener('change', showDest);

  let busy = false;
  const refresh = async () => {
    try {
      const r = await api('/api/backups');
      const last = r.last_good;
      summary.replaceChildren(
        last
          ? h('p', {}, h('strong', {}, `${tr('last')}: `), fmtTime(last.started), ' · ', tr('ago', { d: fmtDuration(r.last_good_age_s) }),
            ' · ', fmtBytes(last.size), ' · ', last.destination)
          : h('p', { class: 'muted' }, tr('none')),
        r.overdue ? h('p', {}, badge('warn', tr('overdue'))) : '',
        h('p', { class: 'small' }, `${tr('next')}: `, r.next_run ? fmtTime(r.next_run) : tr('off')));
      if (!busy) nowBtn.disabled = r.running;
      if (!form.dataset.loaded) {
        const s = r.settings;
        daily.checked = s.schedule.enabled;
        at.value = s.schedule.at;
        dest.value = s.destination;
        label.value = s.usb_label || '';
        const c = s.s3 || {};
        for (const k of Object.keys(s3)) s3[k].value = c[k] || '';
        form.dataset.loaded = 'yes';
        showDest();
      }
      list.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'backups-table' },
        h('caption', {}, tr('list')),
        h('thead', {}, h('tr', {}, ['when', 'kind', 'status', 'size', 'where', 'action'].map((k) => h('th', { scope: 'col' }, tr(k))))),
        h('tbody', {}, r.runs.map((/** @type {any} */ run) => h('tr', { 'data-run': run.id, 'data-kind': run.kind },
          h('th', { scope: 'row' }, fmtTime(run.started)),
          h('td', {}, tr(`k_${run.kind}`), run.trigger !== 'manual' ? h('span', { class: 'small muted' }, ` (${run.trigger})`) : null),
          h('td', {}, badge(LEVEL[run.status] || 'info', tr(`s_${run.status}`)), run.error ? h('div', { class: 'small' }, run.error) : null),
          h('td', {}, run.size ? fmtBytes(run.size) : '—'),
          h('td', { class: 'small' }, run.destination),
          h('td', {}, run.kind === 'backup' && run.location && run.status !== 'failed'
            ? h('button', { type: 'button', class: 'danger small', 'data-action': 'restore', onclick: () => restore(run) }, tr('restore'))
            : null)))))));
    } catch (e) { list.replaceChildren(h('p', { class: 'error' }, errText(e))); }
  };

  /** @param {{ id: number, started: string }} run */
  const restore = async (run) => {
    if (!(await confirmDialog(tr('confirm', { t: fmtTime(run.started) }), tr('restore')))) return;
    busy = true;
    nowBtn.disabled = true;
    notify(tr('restoring'));
    try {
      await api('/api/backups/restore', { method: 'POST', body: { id: run.id } });
      notify(tr('restored'), 'ok');
    } catch (e) { notify(errText(e), 'crit'); }
    busy = false;
    refresh();
  };

  nowBtn.addEventListener('click', async () => {
    busy = true;
    nowBtn.disabled = true;
    nowBtn.textContent = tr('running');
    try {
      const run = await api('/api/backups', { method: 'POST' });
      notify(tr('done', { s: fmtBytes(run.size) }), 'ok');
    } catch (e) { notify(errText(e), 'crit'); }
    busy = false;
    nowBtn.textContent = tr('now');
    refresh();
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.textContent = '';
    /** @type {{ daily: boolean, at: string, destination: string, usb_label?: string, s3?: Record<string, string> }} */
    const req = { daily: daily.checked, at: at.value, destination: dest.value };
    if (dest.value === 'usb') req.usb_label = label.value.trim();
    if (dest.value === 's3') req.s3 = Object.fromEntries(Object.entries(s3).map(([k, i]) => [k, i.value.trim()]));
    try {
      await api('/api/backups/settings', { method: 'PUT', body: req });
      notify(tr('saved'), 'ok');
      refresh();
    } catch (e) { msg.textContent = errText(e); }
  });

  refresh();
}
