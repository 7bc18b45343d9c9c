// @ts-check
// Updates: upload a bundle (XHR, real progress), see it validated, apply it
// and follow each step live (SSE), and the history.
import { api, optional, sse, upload } from '../api.js';
import { t } from '../i18n.js';
import { h, card, dl, badge, confirmDialog, errText, fmtTime, fmtBytes, fmtPct } from '../ui.js';

/** @type {Record<string, import('../ui.js').Level>} */
const RESULT = { done: 'ok', rolled_back: 'warn', failed: 'crit', rejected: 'crit' };
const BUSY = ['uploading', 'backing_up', 'loading_images', 'migrating', 'switching', 'verifying', 'rolling_back'];
const STEPS = ['validated', 'backing_up', 'loading_images', 'migrating', 'switching', 'verifying', 'done'];

/**
 * A checked bundle (the upload's answer, or the status's `pending`).
 * @typedef {object} CheckedBundle
 * @property {string} version
 * @property {string} [installed_version]
 * @property {string} [min_version]
 * @property {{ valid?: boolean, key?: string, algorithm?: string }} [signature]
 * @property {{ images?: { service: string, image: string }[], migrations?: string[], configs?: string[], package?: boolean }} [components]
 * @property {string} [created_at]
 * @property {number} size
 * @property {string} [sha256]
 * @property {boolean} [requires_reboot]
 * @property {string} [release_notes]
 */
/**
 * /api/update/status and its stream.
 * @typedef {{ state: string, step?: string, error?: string, percent?: number, updated_at: string, log?: string[], pending?: CheckedBundle }} UpdateStatus
 */

/** @param {HTMLElement} root */
export function mount(root) {
  /** @type {(() => void) | null} */
  let stop = null;
  const [upSec, upBody] = card(t('upd.upload'), 'card-upload');
  const [stSec, stBody] = card(t('upd.status'), 'card-update-status');
  const [histSec, histBody] = card(t('upd.history'), 'card-update-history');
  [upSec, stSec, histSec].forEach((s) => s.classList.add('wide'));
  root.append(h('h1', {}, t('nav.updates')), h('div', { class: 'cards' }, upSec, stSec, histSec));

  const file = h('input', { type: 'file', id: 'bundle-file', accept: '.araupdate,.tar,.tar.gz,.tgz,.bundle,application/octet-stream' });
  const bar = h('progress', { id: 'upload-progress', max: 100, value: 0, 'aria-label': t('upd.progress') });
  const pct = h('span', { id: 'upload-pct' }, '');
  const msg = h('p', { class: 'form-msg', id: 'upload-msg', role: 'alert' });
  const btn = h('button', { type: 'submit', class: 'primary', id: 'upload-btn' }, t('upd.upload_btn'));
  const check = h('div', { id: 'update-check' });
  const applyBtn = h('button', { type: 'button', class: 'primary', id: 'apply-btn', disabled: true }, t('upd.apply'));
  const form = h('form', { class: 'stack', id: 'upload-form' },
    h('div', { class: 'field' }, h('label', { for: 'bundle-file' }, t('upd.file')), file),
    h('div', { class: 'row' }, btn, bar, pct), msg);
  upBody.append(form, check, h('div', { class: 'row' }, applyBtn));

  /** @param {CheckedBundle | null} c */
  const showCheck = (c) => {
    if (!c) { check.replaceChildren(); applyBtn.disabled = true; return; }
    const sig = c.signature || {};
    const comp = c.components || {};
    check.replaceChildren(h('h3', {}, t('upd.validated')), dl([
      [t('upd.version'), `${c.installed_version || '?'} → ${c.version}`],
      [t('upd.min_version'), c.min_version || '—'],
      [t('upd.signature'), sig.valid ? badge('ok', t('upd.sig_ok', { k: sig.key || '?', a: sig.algorithm || '?' })) : badge('crit', t('upd.sig_bad'))],
      [t('upd.created'), fmtTime(c.created_at)],
      [t('upd.size'), `${fmtBytes(c.size)} · sha256 ${String(c.sha256 || '').slice(0, 16)}…`],
      [t('upd.images'), (comp.images || []).map((i) => `${i.service}: ${i.image}`).join(', ') || '—'],
      [t('upd.migrations'), (comp.migrations || []).join(', ') || '—'],
      [t('upd.configs'), (comp.configs || []).join(', ') || '—'],
      [t('upd.package'), comp.package ? t('net.yes') : t('net.no')],
      [t('upd.reboot'), c.requires_reboot ? badge('warn', t('net.yes')) : t('net.no')],
    ]), c.release_notes ? h('div', {}, h('h3', {}, t('upd.notes')), h('pre', { class: 'notes' }, c.release_notes)) : '');
    applyBtn.disabled = !sig.valid;
  };

  // A refused bundle: what it means in words (translated by its code), then
  // the box's own detail (which part, which version, which key).
  /** @param {any} e an ApiError, or what upload() rejected with */
  const showError = (e) => {
    msg.dataset.code = e.code || String(e.status);
    if (e.status === 404) { msg.textContent = t('upd.unavailable'); return; }
    const key = `upd.err.${e.code}`;
    const head = t(key);
    if (head === key) { msg.textContent = errText(e); return; }
    msg.replaceChildren(h('strong', {}, head), e.message ? h('span', { class: 'detail small' }, e.message) : '');
  };

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.textContent = '';
    delete msg.dataset.code;
    const f = file.files?.[0];
    if (!f) { msg.textContent = t('upd.pick'); return; }
    btn.disabled = true;
    bar.value = 0;
    try {
      const c = await upload('/api/update/upload', f, (loaded, total) => {
        const p = total ? Math.round((100 * loaded) / total) : 0;
        bar.value = p;
        pct.textContent = `${fmtPct(p, 0)} (${fmtBytes(loaded)} / ${fmtBytes(total)})`;
      });
      bar.value = 100;
      msg.textContent = '';
      showCheck(c);
    } catch (e) {
      showCheck(null);
      showError(e);
      history();
    }
    btn.disabled = false;
  });

  applyBtn.addEventListener('click', async () => {
    if (!(await confirmDialog(t('upd.confirm'), t('upd.apply')))) return;
    applyBtn.disabled = true;
    try { showStatus(await api('/api/update/apply', { method: 'POST' })); } catch (e) { showError(e); applyBtn.disabled = false; }
  });

  const stepList = h('ol', { class: 'steps', id: 'update-steps' });
  const stateLine = h('p', { id: 'update-state', role: 'status' });
  const stBar = h('progress', { id: 'update-progress', max: 100, value: 0, 'aria-label': t('upd.step_progress') });
  const logBox = h('pre', { class: 'log', id: 'update-log', tabindex: 0, 'aria-label': t('upd.log') });
  stBody.append(stateLine, stBar, stepList, logBox);

  // The apply answer and the stream race: never step back to an older status.
  let shownAt = 0;
  /** @param {UpdateStatus | null} s */
  const showStatus = (s) => {
    if (!s) return;
    const changed = Date.parse(s.updated_at) || 0;
    if (changed < shownAt) return;
    shownAt = changed;
    const lvl = s.state === 'done' ? 'ok' : ['failed', 'rolled_back'].includes(s.state) ? 'crit' : BUSY.includes(s.state) ? 'warn' : 'info';
    stateLine.replaceChildren(badge(lvl, t(`upd.st.${s.state}`)), ' ', s.step && s.step !== s.state ? s.step : '', s.error ? h('span', { class: 'error' }, ` — ${s.error}`) : '');
    stateLine.dataset.state = s.state;
    stBar.value = s.percent || 0;
    const at = STEPS.indexOf(s.state);
    stepList.replaceChildren(...STEPS.map((st, i) => {
      const state = at < 0 ? (s.state === 'idle' ? 'todo' : 'todo') : i < at ? 'done' : i === at ? (s.state === 'done' ? 'done' : 'now') : 'todo';
      const icon = { done: '✓', now: '▶', todo: '○' }[state];
      return h('li', { class: `step ${state}`, 'data-step': st, 'aria-current': state === 'now' ? 'step' : false },
        h('span', { 'aria-hidden': 'true' }, icon), ' ', t(`upd.st.${st}`), h('span', { class: 'sr-only' }, ` (${t(`upd.step_${state}`)})`));
    }));
    logBox.textContent = (s.log || []).join('\n');
    if (s.pending && s.state === 'validated') showCheck(s.pending);
    if (['done', 'failed', 'rolled_back'].includes(s.state)) history();
  };

  const history = async () => {
    try {
      /** @type {{ updates: { version?: string, from_version?: string, source: string, result: string, error?: string, started_at: string, finished_at?: string }[] } | null} */
      const r = await optional('/api/update/history');
      if (!r) { histBody.replaceChildren(h('p', { class: 'muted' }, t('upd.unavailable'))); return; }
      if (!r.updates.length) { histBody.replaceChildren(h('p', { class: 'muted' }, t('upd.no_history'))); return; }
      histBody.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'update-history' },
        h('thead', {}, h('tr', {}, ['upd.version', 'upd.from', 'upd.source', 'upd.result', 'upd.started', 'upd.finished'].map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, r.updates.map((u) => h('tr', { 'data-result': u.result, 'data-version': u.version || '' },
          h('th', { scope: 'row' }, u.version || '—'), h('td', {}, u.from_version || '—'), h('td', {}, u.source),
          h('td', {}, badge(RESULT[u.result] || 'info', t(`upd.res.${u.result}`)), u.error ? h('div', { class: 'muted small' }, u.error) : null),
          h('td', {}, fmtTime(u.started_at)), h('td', {}, fmtTime(u.finished_at))))))));
    } catch (e) { histBody.replaceChildren(h('p', { class: 'error' }, errText(e))); }
  };

  optional('/api/update/status').then((s) => {
    if (!s) { stateLine.replaceChildren(badge('off', t('upd.unavailable'))); return; }
    showStatus(s);
    stop = sse('/api/update/status/stream', { status: (d) => { try { showStatus(JSON.parse(d)); } catch { /* ignore */ } } });
  }).catch((e) => { stateLine.textContent = errText(e); });
  history();
  return () => { if (stop) stop(); };
}
