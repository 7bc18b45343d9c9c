// @ts-check
// Services: state, restarts, last exit, start/stop/restart with
// confirmation, a live log tail; LLM models (delete, unload; downloads in
// downloads.js) and a small LLM playground.
import { api, sse } from '../api.js';
import { downloads } from './downloads.js';
import { t } from '../i18n.js';
import { h, card, badge, confirmDialog, notify, errText, fmtTime, fmtBytes, fmtNum, fmtPct, stateLevel } from '../ui.js';

const MAX_LOG_LINES = 500;

/**
 * A supervised service (/api/services).
 * @typedef {object} Service
 * @property {string} name
 * @property {string} role
 * @property {string} state
 * @property {boolean} critical
 * @property {number} restart_count
 * @property {number | null} last_exit_code
 * @property {boolean} [oom_killed]
 * @property {string | null} [last_error]
 * @property {string | null} since
 * @property {string | null} [gpu]
 * @property {ImagePull | null} [pull]
 */
/**
 * @typedef {{ image: string, bytes_done: number, bytes_total?: number | null, layers_done: number, layers_total: number, attempt: number }} ImagePull
 */

// An image being pulled: a bar and the numbers (bytes of the registry's
// size, layers), or nothing.
/** @param {ImagePull | null | undefined} p */
function pullProgress(p) {
  if (!p) return null;
  const pct = p.bytes_total ? Math.min(100, Math.round((p.bytes_done * 100) / p.bytes_total)) : null;
  const text = t('svc.image_pull', { d: fmtBytes(p.bytes_done), t: p.bytes_total ? fmtBytes(p.bytes_total) : '?', l: p.layers_done, n: p.layers_total, a: p.attempt });
  return h('div', { class: 'pull small', 'data-pull': p.image },
    h('progress', { max: 100, value: pct ?? 0, 'aria-label': text }), h('span', { class: 'muted' }, ` ${pct === null ? '' : `${fmtPct(pct, 0)} · `}${text}`));
}

/** @type {import('../app.js').Mount} */
export function mount(root, params) {
  /** @type {number[]} */
  const timers = [];
  /** @type {(() => void) | null} */
  let stopLogs = null;
  const [svcSec, svcBody] = card(t('svc.title'), 'card-services');
  const [logSec, logBody] = card(t('svc.logs'), 'card-logs');
  const [modelSec, modelBody] = card(t('svc.models'), 'card-models');
  const [playSec, playBody] = card(t('svc.playground'), 'card-playground');
  [svcSec, logSec, modelSec, playSec].forEach((s) => s.classList.add('wide'));
  root.append(h('h1', {}, t('nav.services')), h('div', { class: 'cards' }, svcSec, logSec, modelSec, playSec));

  // ---- services table
  const tbody = h('tbody', { id: 'svc-rows' });
  svcBody.append(h('div', { class: 'table-wrap' }, h('table', { class: 'table' },
    h('caption', { class: 'sr-only' }, t('svc.title')),
    h('thead', {}, h('tr', {}, ['svc.name', 'svc.state', 'svc.restarts', 'svc.last_exit', 'svc.since', 'svc.actions'].map((k) => h('th', { scope: 'col' }, t(k))))),
    tbody)));

  /**
   * @param {string} name
   * @param {'start' | 'stop' | 'restart'} action
   */
  const act = async (name, action) => {
    const ok = await confirmDialog(t(`svc.confirm_${action}`, { s: name }), t(`svc.${action}`));
    if (!ok) return;
    try {
      await api(`/api/services/${encodeURIComponent(name)}/${action}`, { method: 'POST' });
      notify(t('svc.done', { a: t(`svc.${action}`), s: name }), 'ok');
    } catch (e) { notify(errText(e), 'crit'); }
    refresh();
  };

  const refresh = async () => {
    try {
      /** @type {{ services: Service[] }} */
      const { services } = await api('/api/services');
      tbody.replaceChildren(...services.map((s) => {
        const exit = s.last_exit_code === null ? '—' : `${s.last_exit_code}${s.oom_killed ? ` (${t('svc.oom')})` : ''}`;
        /** @param {'start' | 'stop' | 'restart'} action */
        const btn = (action) => h('button', { type: 'button', class: 'small', 'data-action': action, 'data-service': s.name,
          'aria-label': `${t(`svc.${action}`)} ${s.name}`, onclick: () => act(s.name, action) }, t(`svc.${action}`));
        return h('tr', { 'data-service': s.name, 'data-state': s.state },
          h('th', { scope: 'row' }, s.name, h('div', { class: 'muted small' }, `${t(`role.${s.role}`)}${s.critical ? ` · ${t('svc.critical')}` : ''}`)),
          h('td', { class: 'state' }, badge(stateLevel(s.state), t(`state.${s.state}`)), s.last_error ? h('div', { class: 'muted small' }, s.last_error) : null,
            pullProgress(s.pull), s.gpu ? h('div', { class: 'muted small', 'data-gpu': s.gpu }, t(s.gpu === 'cpu' ? 'svc.gpu_cpu' : 'svc.gpu_on')) : null),
          h('td', { class: 'restarts' }, fmtNum(s.restart_count, 0)),
          h('td', {}, exit),
          h('td', {}, fmtTime(s.since)),
          h('td', { class: 'actions' }, btn('start'), btn('stop'), btn('restart'),
            h('button', { type: 'button', class: 'small secondary', 'data-action': 'logs', 'aria-label': `${t('svc.show_logs')} ${s.name}`, onclick: () => tail(s.name) }, t('svc.show_logs'))));
      }));
      if (!services.length) tbody.replaceChildren(h('tr', {}, h('td', { colspan: 6 }, t('svc.none'))));
      if (!logSel.options.length || logSel.options.length !== services.length) {
        const cur = logSel.value;
        logSel.replaceChildren(...services.map((s) => h('option', { value: s.name, selected: s.name === cur }, s.name)));
      }
    } catch (e) { tbody.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'error' }, errText(e)))); }
  };

  // ---- log tail
  const logSel = h('select', { id: 'log-service', 'aria-label': t('svc.log_service') });
  const logPre = h('pre', { class: 'log', id: 'svc-log', tabindex: 0, 'aria-label': t('svc.logs'), 'aria-live': 'off' });
  const logState = h('span', { class: 'muted', id: 'svc-log-state', role: 'status' });
  /** @param {string} name */
  const tail = (name) => {
    if (stopLogs) stopLogs();
    logSel.value = name;
    logPre.textContent = '';
    logState.textContent = t('svc.log_following', { s: name });
    stopLogs = sse(`/api/services/${encodeURIComponent(name)}/logs?tail=100&follow=true`, {
      message: (line) => {
        logPre.append(`${line}\n`);
        while (logPre.childNodes.length > MAX_LOG_LINES) logPre.firstChild?.remove();
        logPre.scrollTop = logPre.scrollHeight;
      },
      error: (d) => { if (d) logState.textContent = d; },
    }, (st) => { if (st === 'reconnecting') logState.textContent = t('live.reconnecting_plain'); else if (st === 'open') logState.textContent = t('svc.log_following', { s: name }); });
    logSec.scrollIntoView({ block: 'nearest' });
  };
  logBody.append(h('div', { class: 'row' }, logSel,
    h('button', { type: 'button', id: 'log-follow', onclick: () => tail(logSel.value) }, t('svc.follow')),
    h('button', { type: 'button', class: 'secondary', onclick: () => { if (stopLogs) stopLogs(); stopLogs = null; logState.textContent = t('svc.log_stopped'); } }, t('svc.stop_follow')),
    logState), logPre);

  // ---- models: the installed ones, then downloads (suggestions, queue, partials)
  const modelList = h('div', { id: 'model-list' });
  const dl = downloads(() => models());
  const unloadAll = h('button', { type: 'button', class: 'secondary', id: 'unload-all', onclick: async () => {
    try { const r = await api('/api/services/llm/unload', { method: 'POST' }); notify(t('svc.unloaded', { m: r.unloaded.join(', ') || t('ov.none') }), 'ok'); } catch (e) { notify(errText(e), 'crit'); }
  } }, t('svc.unload_all'));
  modelBody.append(modelList, h('div', { class: 'row' }, unloadAll), dl.el);

  const models = async () => {
    try {
      /** @type {{ models: { name: string, size: number, modified_at: string }[] }} */
      const { models: list } = await api('/api/services/llm/models');
      if (!list.length) { modelList.replaceChildren(h('p', { class: 'muted' }, t('svc.no_models'))); return; }
      modelList.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'model-table' },
        h('thead', {}, h('tr', {}, ['svc.model', 'svc.size', 'svc.modified', 'svc.actions'].map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, list.map((m) => h('tr', { 'data-model': m.name },
          h('th', { scope: 'row' }, m.name), h('td', {}, fmtBytes(m.size)), h('td', {}, fmtTime(m.modified_at)),
          h('td', { class: 'actions' },
            h('button', { type: 'button', class: 'small', 'aria-label': `${t('svc.unload')} ${m.name}`, onclick: async () => {
              try { await api('/api/services/llm/unload', { method: 'POST', body: { model: m.name } }); notify(t('svc.unloaded', { m: m.name }), 'ok'); } catch (e) { notify(errText(e), 'crit'); }
            } }, t('svc.unload')),
            h('button', { type: 'button', class: 'small danger', 'aria-label': `${t('svc.delete')} ${m.name}`, onclick: async () => {
              if (!(await confirmDialog(t('svc.confirm_delete', { m: m.name }), t('svc.delete')))) return;
              try { await api(`/api/services/llm/models/${encodeURIComponent(m.name)}`, { method: 'DELETE' }); notify(t('svc.deleted', { m: m.name }), 'ok'); } catch (e) { notify(errText(e), 'crit'); }
              models();
            } }, t('svc.delete')))))))));
    } catch (e) { modelList.replaceChildren(h('p', { class: 'muted' }, errText(e))); }
  };

  // ---- playground
  const prompt = h('textarea', { id: 'play-prompt', rows: 3 });
  const answer = h('div', { id: 'play-answer', class: 'answer', 'aria-live': 'polite' });
  const sendBtn = h('button', { type: 'submit', class: 'primary' }, t('svc.send'));
  const playForm = h('form', { class: 'stack', id: 'play-form' },
    h('div', { class: 'field' }, h('label', { for: 'play-prompt' }, t('svc.prompt')), prompt), sendBtn, answer);
  playForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!prompt.value.trim()) return;
    sendBtn.disabled = true;
    answer.textContent = t('common.loading');
    try {
      const r = await api('/api/llm/chat', { method: 'POST', body: { messages: [{ role: 'user', content: prompt.value }], max_tokens: 512 } });
      answer.replaceChildren(h('p', {}, r.message.content), h('p', { class: 'muted' }, `${r.model} · ${r.tokens} tokens${r.tokens_per_second ? ` · ${fmtNum(r.tokens_per_second)} tok/s` : ''}`));
    } catch (e) { answer.textContent = errText(e); }
    sendBtn.disabled = false;
  });
  playBody.append(playForm);
  if (params.get('playground')) setTimeout(() => { playSec.scrollIntoView(); prompt.focus(); }, 0);

  refresh();
  models();
  timers.push(setInterval(refresh, 3000));
  return () => { timers.forEach(clearInterval); dl.stop(); if (stopLogs) stopLogs(); };
}
