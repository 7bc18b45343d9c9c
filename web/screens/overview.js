// @ts-check
// Overview: the status header, live cards, the 24 h chart, workflows,
// links and the footer with version facts. Without a login (`guest`, while
// the status routes are public) it shows what those routes tell anyone:
// the admin-only parts say that a login shows them.
import { api, optional, liveStream } from '../api.js';
import { t } from '../i18n.js';
import { h, card, dl, badge, fmtPct, fmtBytes, fmtTime, fmtDuration, fmtNum, fmtTemp, stateLevel, usageLevel, errText, reasonText } from '../ui.js';
import { drawChart, legend, fromHistory, fromSample, SPAN_MS } from '../chart.js';

/** @type {Record<string, import('../ui.js').Level>} */
const LEVEL = { OK: 'ok', WARNING: 'warn', CRITICAL: 'crit' };

/**
 * A service's state as the overview shows it.
 * @typedef {{ role?: string, state: string }} ServiceState
 */

/** @type {import('../app.js').Mount} */
export function mount(root, params, { guest = false }) {
  /** @type {number[]} */
  const timers = [];
  /** @type {import('../chart.js').Point[]} */
  let points = [];

  // ---- status header
  const levelBox = h('div', { class: 'level', id: 'status-level', role: 'status' });
  const reasons = h('ul', { class: 'reasons', id: 'status-reasons' });
  const updated = h('span', { id: 'last-update' }, '—');
  const healBadge = h('span', { id: 'healing-badge' });
  const conn = h('span', { id: 'live-state', 'data-state': 'connecting', role: 'status' }, t('live.connecting'));
  const header = h('section', { class: 'status-header', 'aria-label': t('ov.status') },
    levelBox,
    h('div', { class: 'status-meta' },
      h('span', {}, t('ov.last_update'), ': ', updated),
      h('span', {}, t('ov.healing'), ': ', healBadge),
      h('span', {}, t('ov.stream'), ': ', conn)),
    reasons);

  // ---- cards
  const [perfSec, perf] = card(t('ov.perf'), 'card-perf');
  const [diskSec, disk] = card(t('ov.storage'), 'card-storage');
  const [aiSec, ai] = card(t('ov.ai'), 'card-ai');
  const [netSec, net] = card(t('ov.network'), 'card-network');
  const [chartSec, chartBody] = card(t('ov.chart'), 'card-chart');
  const [wfSec, wf] = card(t('ov.workflows'), 'card-workflows');
  const [linkSec, links] = card(t('ov.links'), 'card-links');
  chartSec.classList.add('wide');
  const chartHost = h('div', { class: 'chart-host', id: 'chart-24h' }, h('p', { class: 'muted' }, t('common.loading')));
  const chartMsg = h('p', { class: 'muted', id: 'chart-msg' });
  chartBody.append(chartHost, legend(), chartMsg);

  const footer = h('footer', { class: 'facts', id: 'footer-facts' });
  root.append(h('h1', { class: 'sr-only' }, t('nav.overview')), header,
    h('div', { class: 'cards' }, perfSec, diskSec, aiSec, netSec, chartSec, wfSec, linkSec), footer);

  // The apps behind the front door, on this same origin (the session
  // cookie lets the admin in; see api::proxy).
  links.append(h('ul', { class: 'links' },
    h('li', {}, h('a', { href: '/n8n/', rel: 'noopener', id: 'link-n8n' }, 'n8n', h('span', { class: 'muted' }, ` — ${t('ov.link_n8n')}`))),
    h('li', {}, h('a', { href: '/minio/', rel: 'noopener', id: 'link-minio' }, 'MinIO', h('span', { class: 'muted' }, ` — ${t('ov.link_minio')}`))),
    h('li', {}, h('a', { href: '#/services?playground=1' }, t('ov.playground'), h('span', { class: 'muted' }, ` — ${t('ov.link_llm')}`)))));

  // ---- live sample → performance + storage
  /** @param {any} s a Sample from /api/metrics/live or the live stream; null: none yet */
  const showSample = (s) => {
    if (!s) {
      perf.replaceChildren(h('p', { class: 'muted' }, t('ov.no_sample')));
      return;
    }
    const gpu = s.gpu;
    perf.replaceChildren(dl([
      [t('ov.cpu'), h('span', { id: 'cpu-value', class: 'big', 'data-ts': s.ts }, fmtPct(s.cpu_percent))],
      [t('ov.ram'), h('span', {}, fmtPct(s.ram_percent), h('span', { class: 'muted' }, ` (${fmtBytes(s.ram_used_bytes)} / ${fmtBytes(s.ram_total_bytes)})`))],
      [t('ov.gpu'), gpu ? `${fmtPct(gpu.utilization_percent)} · ${gpu.name}` : t('ov.no_gpu')],
      [t('ov.temp'), fmtTemp(s.temperature_c)],
    ]));
    const p = s.disk_percent;
    const lvl = usageLevel(p);
    const words = { ok: t('disk.ok'), warn: t('disk.warn'), crit: t('disk.crit'), info: '', off: t('common.unknown') }[lvl];
    const meter = h('meter', { min: 0, max: 100, low: 80, high: 90, optimum: 0, value: p ?? 0, id: 'disk-meter', 'aria-label': t('ov.disk_used') });
    disk.replaceChildren(
      h('div', { class: `usage ${lvl}` }, meter, ' ', h('strong', {}, fmtPct(p)), ' ', badge(lvl, words)),
      dl([[t('ov.disk_used'), fmtBytes(s.disk_used_bytes)], [t('ov.disk_free'), fmtBytes(s.disk_free_bytes)], [t('ov.disk_total'), fmtBytes(s.disk_total_bytes)]]));
  };

  /** @param {any} s */
  const addPoint = (s) => {
    points.push(fromSample(s));
    const cut = Date.now() - SPAN_MS;
    while (points.length && points[0].t < cut) points.shift();
    drawChart(chartHost, points);
  };

  // ---- polled parts
  const status = async () => {
    try {
      /** @type {{ level: string, last_update: string, reasons: (import('../ui.js').Reason & { level: string })[] }} */
      const st = await api('/api/system/status');
      const lvl = LEVEL[st.level] || 'warn';
      levelBox.replaceChildren(badge(lvl, t(`level.${st.level}`)));
      levelBox.dataset.level = st.level;
      updated.textContent = fmtTime(st.last_update);
      reasons.replaceChildren(...(st.reasons.length ? st.reasons.map((r) => h('li', { class: LEVEL[r.level] }, badge(LEVEL[r.level], t(`level.${r.level}`)), ' ', reasonText(r)))
        : [h('li', {}, t('ov.all_ok'))]));
    } catch (e) { levelBox.replaceChildren(badge('crit', errText(e))); }
  };
  const loginFor = () => h('a', { href: '#/login?next=%23%2Foverview', class: 'muted' }, t('ov.login_for_more'));
  const healing = async () => {
    if (guest) { healBadge.replaceChildren(loginFor()); return; }
    try {
      const hs = await api('/api/self-healing/status');
      const lvl = hs.loop_status === 'healthy' ? (hs.failed_services.length ? 'crit' : 'ok') : hs.loop_status === 'not_running' ? 'off' : 'warn';
      const words = [t(`heal.loop.${hs.loop_status}`)];
      if (!hs.enabled) words.push(t('heal.disabled'));
      if (hs.failed_services.length) words.push(t('heal.failed', { s: hs.failed_services.join(', ') }));
      healBadge.replaceChildren(h('a', { href: '#/healing' }, badge(lvl, words.join(' · '))),
        hs.last_event ? h('span', { class: 'muted' }, ` ${t('heal.last')}: ${hs.last_event.description} (${fmtTime(hs.last_event.at)})`) : '');
    } catch (e) { healBadge.replaceChildren(badge('off', errText(e))); }
  };
  const aiCard = async () => {
    if (guest) {
      // The public service list: the runtimes' states, nothing more.
      try {
        /** @type {{ services: ServiceState[] }} */
        const r = await api('/api/services', { noRedirect: true });
        /** @param {string} role */
        const of = (role) => r.services.find((s) => s.role === role);
        /** @param {ServiceState | null | undefined} s */
        const svc = (s) => (s ? badge(stateLevel(s.state), t(`state.${s.state}`)) : t('ov.not_configured'));
        ai.replaceChildren(dl([[t('ov.llm'), svc(of('llm'))], [t('ov.embeddings'), svc(of('embeddings'))]]), h('p', {}, loginFor()));
      } catch (e) { ai.replaceChildren(h('p', { class: 'error' }, errText(e))); }
      return;
    }
    try {
      const a = await api('/api/services/ai');
      /** @param {ServiceState | null | undefined} s */
      const svc = (s) => (s ? badge(stateLevel(s.state), t(`state.${s.state}`)) : t('ov.not_configured'));
      ai.replaceChildren(dl([
        [t('ov.llm'), svc(a.llm)],
        [t('ov.embeddings'), svc(a.embeddings)],
        [t('ov.tps'), a.last_tokens_per_second ? `${fmtNum(a.last_tokens_per_second)} tok/s` : '—'],
        [t('ov.gpu_load'), a.gpu_utilization_percent === null ? t('ov.no_gpu') : fmtPct(a.gpu_utilization_percent)],
        [t('ov.loaded'), a.loaded_models ? (a.loaded_models.map((/** @type {{ name: string }} */ m) => m.name).join(', ') || t('ov.none')) : (a.llm_error || '—')],
      ]));
    } catch (e) { ai.replaceChildren(h('p', { class: 'error' }, errText(e))); }
  };
  const network = async () => {
    try {
      /** @type {{ hostname: string, mdns_name: string, interfaces: { name: string, addresses: string[] }[], internet_reachable?: boolean | null, webhook_reachable?: boolean | null, tls?: { port: number, fingerprint: string } | null }} */
      const n = await api('/api/system/network');
      /** @param {boolean | null | undefined} v */
      const reach = (v) => (v === null || v === undefined ? badge('off', t('common.unknown')) : v ? badge('ok', t('net.yes')) : badge('crit', t('net.no')));
      net.replaceChildren(dl([
        [t('net.host'), `${n.hostname} · ${n.mdns_name}`],
        // Container bridges and link-local addresses mean nothing to the owner.
        ...n.interfaces.filter((i) => !/^(veth|br-|docker)/.test(i.name))
          .map((i) => /** @type {[string, string]} */ ([i.name, i.addresses.filter((a) => !a.startsWith('fe80:')).join(', ') || '—'])),
        [t('net.internet'), reach(n.internet_reachable)],
        [t('net.webhook'), reach(n.webhook_reachable)],
        // The certificate's fingerprint, to compare with what the browser shows.
        ...(n.tls ? [/** @type {[string, HTMLElement]} */ ([t('net.tls'), h('span', { id: 'tls-fingerprint', class: 'small mono', 'data-port': String(n.tls.port) }, n.tls.fingerprint)])] : []),
      ]));
    } catch (e) { net.replaceChildren(h('p', { class: 'error' }, errText(e))); }
  };
  const workflows = async () => {
    try {
      const w = await optional('/api/workflows/activity');
      if (!w) { wf.replaceChildren(h('p', { class: 'muted', id: 'wf-nodata' }, t('wf.nodata'))); return; }
      const d = w.last_24h || {};
      wf.replaceChildren(dl([
        [t('wf.total'), h('span', { id: 'wf-total' }, fmtNum(d.total ?? 0, 0))],
        [t('wf.success'), h('span', { id: 'wf-success' }, badge('ok', fmtNum(d.success ?? 0, 0)))],
        [t('wf.error'), h('span', { id: 'wf-error' }, badge(d.error ? 'crit' : 'ok', fmtNum(d.error ?? 0, 0)))],
        [t('wf.active'), h('span', { id: 'wf-active' }, fmtNum(w.active ?? 0, 0))],
      ]), (w.recent || []).length ? h('ul', { class: 'plain' }, w.recent.map((/** @type {any} */ x) =>
        h('li', { 'data-workflow': x.workflow_id, 'data-status': x.status },
          badge(x.status === 'success' ? 'ok' : x.status === 'error' ? 'crit' : 'info', t(`wf.st.${x.status}`)), ' ', x.workflow_name || x.workflow_id, ' · ', fmtTime(x.started_at),
          x.error ? h('div', { class: 'muted small' }, x.error) : null))) : h('p', { class: 'muted' }, t('wf.none')));
    } catch (e) { wf.replaceChildren(h('p', { class: 'muted' }, t('wf.nodata'), ' (', errText(e), ')')); }
  };
  const info = async () => {
    try {
      const i = await api('/api/system/info');
      const plat = i.platform.jetpack ? `JetPack ${i.platform.jetpack} (L4T ${i.platform.l4t})` : i.platform.l4t ? `L4T ${i.platform.l4t}` : (i.platform.os_pretty_name || '—');
      footer.replaceChildren(
        h('span', {}, `${t('foot.version')} ${i.version}`), h('span', {}, `${t('foot.build')} ${i.build_hash}`),
        h('span', {}, plat), h('span', {}, `${t('foot.host')} ${i.hostname}`),
        h('span', {}, `${t('foot.uptime')} ${fmtDuration(i.system_uptime_seconds ?? i.daemon_uptime_seconds)}`));
    } catch (e) { footer.replaceChildren(h('span', {}, errText(e))); }
  };
  /**
   * @param {() => void} fn
   * @param {number} ms
   */
  const every = (fn, ms) => { fn(); timers.push(setInterval(fn, ms)); };
  every(status, 5000);
  every(healing, 10000);
  every(aiCard, 15000);
  every(network, 30000);
  every(workflows, 10000);
  every(info, 60000);

  api('/api/metrics/live').then((l) => showSample(l.sample)).catch(() => showSample(null));
  api('/api/metrics/history?range=24h&points=288').then((hist) => {
    points = fromHistory(hist).concat(points).sort((a, b) => a.t - b.t);
    drawChart(chartHost, points);
    chartMsg.textContent = t('chart.source', { n: hist.t.length, src: hist.source });
  }).catch((e) => { chartMsg.textContent = errText(e); drawChart(chartHost, points); });

  const redraw = () => drawChart(chartHost, points);
  window.addEventListener('resize', redraw);
  let lastState = '';
  const stop = liveStream((s) => { showSample(s); addPoint(s); }, (state, delay) => {
    conn.dataset.state = state;
    const txt = state === 'reconnecting' ? t('live.reconnecting', { s: Math.round((delay ?? 0) / 1000) }) : t(`live.${state}`);
    conn.replaceChildren(badge(state === 'live' ? 'ok' : 'warn', txt));
    if (state !== lastState) lastState = state;
  });
  return () => { timers.forEach(clearInterval); stop(); window.removeEventListener('resize', redraw); };
}
