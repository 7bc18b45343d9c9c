// @ts-check
// Self-healing: the event list (severity filter, paging), the loop's state
// and statistics, refreshed automatically.
import { api, optional } from '../api.js';
import { t } from '../i18n.js';
import { h, card, dl, badge, errText, fmtTime, fmtPct, fmtFixed } from '../ui.js';

const PAGE = 20;
/** @type {Record<string, import('../ui.js').Level>} */
const SEV = { INFO: 'info', WARNING: 'warn', CRITICAL: 'crit' };

/**
 * A self-healing event (/api/self-healing/events).
 * @typedef {{ at: string, severity: string, event_type: string, service?: string | null, description: string, action?: string | null, result: string }} HealingEvent
 */

/** @param {HTMLElement} root */
export function mount(root) {
  let offset = 0;
  /** @type {number | undefined} */
  let timer;
  const [statSec, statBody] = card(t('heal.stats'), 'card-heal-stats');
  const [evSec, evBody] = card(t('heal.events'), 'card-heal-events');
  evSec.classList.add('wide');
  statSec.classList.add('wide');
  root.append(h('h1', {}, t('nav.healing')), h('div', { class: 'cards' }, statSec, evSec));

  const sev = h('select', { id: 'sev-filter', 'aria-label': t('heal.severity') },
    h('option', { value: '' }, t('heal.all')),
    ['INFO', 'WARNING', 'CRITICAL'].map((s) => h('option', { value: s }, t(`level.${s}`))));
  const auto = h('input', { type: 'checkbox', id: 'auto-refresh', checked: true });
  const tbody = h('tbody', { id: 'heal-rows' });
  const pageInfo = h('span', { id: 'heal-page', role: 'status' });
  const prev = h('button', { type: 'button', class: 'secondary', id: 'heal-prev', onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, t('common.prev'));
  const next = h('button', { type: 'button', class: 'secondary', id: 'heal-next', onclick: () => { offset += PAGE; load(); } }, t('common.next'));
  sev.addEventListener('change', () => { offset = 0; load(); });
  evBody.append(
    h('div', { class: 'row' }, h('label', { for: 'sev-filter' }, t('heal.severity')), sev,
      h('label', { class: 'check', for: 'auto-refresh' }, auto, ' ', t('heal.auto'))),
    h('div', { class: 'table-wrap' }, h('table', { class: 'table' },
      h('caption', { class: 'sr-only' }, t('heal.events')),
      h('thead', {}, h('tr', {}, ['heal.time', 'heal.sev', 'heal.service', 'heal.what', 'heal.action', 'heal.result'].map((k) => h('th', { scope: 'col' }, t(k))))),
      tbody)),
    h('div', { class: 'row' }, prev, pageInfo, next));

  const load = async () => {
    const q = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
    if (sev.value) q.set('severity', sev.value);
    try {
      /** @type {{ events: HealingEvent[], total: number }} */
      const r = await api(`/api/self-healing/events?${q}`);
      tbody.replaceChildren(...(r.events.length ? r.events.map((e) => h('tr', { 'data-event': e.event_type, 'data-service': e.service || '' },
        h('td', {}, fmtTime(e.at)),
        h('td', {}, badge(SEV[e.severity] || 'info', t(`level.${e.severity}`))),
        h('td', {}, e.service || '—'),
        h('td', {}, e.description, h('div', { class: 'muted small ev-type' }, t(`ev.${e.event_type}`) === `ev.${e.event_type}` ? e.event_type : t(`ev.${e.event_type}`))),
        h('td', {}, e.action || '—'),
        h('td', {}, e.result))) : [h('tr', {}, h('td', { colspan: 6, class: 'muted' }, t('heal.no_events')))]));
      const pages = Math.max(1, Math.ceil(r.total / PAGE));
      pageInfo.textContent = t('common.page', { p: Math.floor(offset / PAGE) + 1, n: pages, total: r.total });
      prev.disabled = offset === 0;
      next.disabled = offset + PAGE >= r.total;
    } catch (e) {
      tbody.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'error' }, errText(e))));
    }
  };

  const stats = async () => {
    try {
      const [s, m] = await Promise.all([api('/api/self-healing/status'), optional('/api/self-healing/metrics').catch(() => null)]);
      const lvl = s.loop_status === 'healthy' ? 'ok' : s.loop_status === 'not_running' ? 'off' : 'warn';
      /** @type {HTMLElement[]} */
      const parts = [dl([
        [t('heal.loop'), badge(lvl, t(`heal.loop.${s.loop_status}`))],
        [t('heal.enabled'), s.enabled ? badge('ok', t('net.yes')) : badge('warn', t('net.no'))],
        [t('heal.heartbeat'), s.heartbeat_age_ms === null ? '—' : `${fmtFixed(s.heartbeat_age_ms / 1000, 1)} s`],
        [t('heal.failed_services'), s.failed_services.length ? badge('crit', s.failed_services.join(', ')) : t('ov.none')],
        [t('heal.last'), s.last_event ? `${s.last_event.description} (${fmtTime(s.last_event.at)})` : '—'],
      ])];
      if (m) {
        if (m.services?.length) parts.push(h('h3', {}, t('heal.uptime')), dl(m.services.map((/** @type {{ service: string, uptime_percent_7d: number | null }} */ x) => [x.service, fmtPct(x.uptime_percent_7d)])));
        if (m.actions?.length) parts.push(h('h3', {}, t('heal.actions')), dl(m.actions.map((/** @type {{ action: string, succeeded: number, total: number, success_rate: number | null }} */ a) => [a.action, `${a.succeeded}/${a.total} (${fmtPct(a.success_rate === null ? null : a.success_rate * (a.success_rate <= 1 ? 100 : 1))})`])));
      }
      statBody.replaceChildren(...parts);
    } catch (e) { statBody.replaceChildren(h('p', { class: 'error' }, errText(e))); }
  };

  const tick = () => { if (auto.checked) { load(); stats(); } };
  load();
  stats();
  timer = setInterval(tick, 5000);
  return () => clearInterval(timer);
}
