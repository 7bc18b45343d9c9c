// @ts-check
// Logs: the daemon's log files, tailed live (SSE) with a level filter, and
// a search.
import { optional, sse } from '../api.js';
import { t } from '../i18n.js';
import { h, card, badge, errText, fmtTime } from '../ui.js';

const MAX_LINES = 1000;
const LEVELS = ['', 'error', 'warn', 'info', 'debug'];
/** @type {Record<string, import('../ui.js').Level>} */
const LVL = { error: 'crit', warn: 'warn', info: 'info', debug: 'off', trace: 'off' };

/**
 * One line of a log file as the API gives it (parsed, or only `raw`).
 * @typedef {{ level?: string, ts?: string, message?: string, raw?: string }} LogLine
 */

/** @param {LogLine} l */
function lineEl(l) {
  return h('li', { class: `logline ${l.level || ''}`, 'data-level': l.level || '' },
    l.level ? badge(LVL[l.level] || 'info', l.level.toUpperCase()) : null,
    h('span', { class: 'muted' }, l.ts ? ` ${fmtTime(l.ts)} ` : ' '),
    h('span', { class: 'msg' }, l.message || l.raw));
}

/** @param {HTMLElement} root */
export function mount(root) {
  /** @type {(() => void) | null} */
  let stop = null;
  const [tailSec, tailBody] = card(t('logs.live'), 'card-logtail');
  const [searchSec, searchBody] = card(t('logs.search'), 'card-logsearch');
  tailSec.classList.add('wide');
  searchSec.classList.add('wide');
  root.append(h('h1', {}, t('nav.logs')), h('div', { class: 'cards' }, tailSec, searchSec));

  const source = h('select', { id: 'log-source', 'aria-label': t('logs.source') }, h('option', { value: 'system' }, 'system'));
  const level = h('select', { id: 'log-level', 'aria-label': t('logs.level') }, LEVELS.map((l) => h('option', { value: l }, l ? l.toUpperCase() : t('logs.all_levels'))));
  const state = h('span', { id: 'log-state', role: 'status', class: 'muted' });
  const list = h('ol', { class: 'loglines', id: 'log-lines', tabindex: 0, 'aria-label': t('logs.live') });
  const empty = h('p', { class: 'muted', id: 'log-empty', hidden: true }, t('logs.empty'));
  tailBody.append(h('div', { class: 'row' },
    h('label', { for: 'log-source' }, t('logs.source')), source,
    h('label', { for: 'log-level' }, t('logs.level')), level, state), empty, list);

  const q = h('input', { id: 'log-q', type: 'search', autocomplete: 'off' });
  const results = h('ol', { class: 'loglines', id: 'log-results' });
  const searchMsg = h('p', { class: 'muted', role: 'status', id: 'log-search-msg' });
  const form = h('form', { class: 'row', id: 'log-search' }, h('label', { for: 'log-q' }, t('logs.query')), q,
    h('button', { type: 'submit', class: 'primary' }, t('logs.search_btn')));
  searchBody.append(form, searchMsg, results);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!q.value.trim()) return;
    searchMsg.textContent = t('common.loading');
    delete searchMsg.dataset.n;
    try {
      const p = new URLSearchParams({ q: q.value, source: source.value, limit: '200' });
      const r = await optional(`/api/logs/search?${p}`);
      if (!r) { searchMsg.textContent = t('logs.unavailable'); return; }
      results.replaceChildren(...r.matches.map(lineEl));
      searchMsg.textContent = t('logs.matches', { n: r.matches.length });
      searchMsg.dataset.n = String(r.matches.length);
    } catch (e) { searchMsg.textContent = errText(e); }
  });

  const start = async () => {
    if (stop) stop();
    stop = null;
    list.replaceChildren();
    state.dataset.state = 'connecting';
    state.replaceChildren();
    const p = new URLSearchParams({ source: source.value, lines: '200' });
    if (level.value) p.set('level', level.value);
    try {
      const r = await optional(`/api/logs?${p}`);
      if (!r) { state.replaceChildren(badge('off', t('logs.unavailable'))); return; }
      list.replaceChildren(...r.lines.map(lineEl));
      empty.hidden = r.lines.length > 0;
      list.scrollTop = list.scrollHeight;
    } catch (e) { state.textContent = errText(e); return; }
    const sp = new URLSearchParams({ source: source.value });
    if (level.value) sp.set('level', level.value);
    stop = sse(`/api/logs/stream?${sp}`, {
      line: (data) => {
        try { list.append(lineEl(JSON.parse(data))); } catch { return; }
        empty.hidden = true;
        while (list.childNodes.length > MAX_LINES) list.firstChild?.remove();
        list.scrollTop = list.scrollHeight;
      },
    }, (st) => {
      state.dataset.state = st;
      state.replaceChildren(badge(st === 'open' ? 'ok' : 'warn', st === 'open' ? t('live.live') : t('live.reconnecting_plain')));
    });
  };
  source.addEventListener('change', start);
  level.addEventListener('change', start);
  optional('/api/logs/list').then((r) => {
    if (!r || !r.logs.length) return;
    const cur = source.value;
    source.replaceChildren(...r.logs.map((/** @type {{ source: string }} */ l) => h('option', { value: l.source, selected: l.source === cur }, l.source)));
  }).catch(() => {});
  start();
  return () => { if (stop) stop(); };
}
