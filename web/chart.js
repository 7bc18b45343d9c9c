// @ts-check
// The 24 h chart of CPU, RAM, GPU and temperature, drawn as SVG polylines.
// Percentages and °C share one 0–100 axis. Series differ by colour and by
// dash pattern, and the legend names them, so colour is never the only cue.
// Beside the drawing, a visually hidden table holds its values (the newest,
// then one an hour) for screen readers; the drawing points to it.
import { h, fmtNum } from './ui.js';
import { t, lang } from './i18n.js';

/**
 * One point of the chart: its time (ms since the epoch) and a value per
 * series key (null or missing: not measured).
 * @typedef {{ t: number, [key: string]: number | null | undefined }} Point
 */

export const SERIES = [
  { key: 'cpu_percent', label: 'chart.cpu', cls: 's-cpu', dash: '' },
  { key: 'ram_percent', label: 'chart.ram', cls: 's-ram', dash: '6 3' },
  { key: 'gpu_percent', label: 'chart.gpu', cls: 's-gpu', dash: '2 3' },
  { key: 'temperature_c', label: 'chart.temp', cls: 's-temp', dash: '10 3 2 3' },
];

const PAD = { l: 34, r: 8, t: 8, b: 22 };
const HOUR_MS = 3600 * 1000;
export const SPAN_MS = 24 * HOUR_MS;

/**
 * Points from a /api/metrics/history body: [{t, cpu_percent, …}]
 * @param {{ t: number[], series?: { name: string, avg: (number | null)[] }[] }} hist
 * @returns {Point[]}
 */
export function fromHistory(hist) {
  /** @type {Point[]} */
  const out = hist.t.map((ts) => ({ t: ts }));
  for (const s of hist.series || []) {
    s.avg.forEach((v, i) => { if (out[i]) out[i][s.name] = v; });
  }
  return out;
}

/**
 * One point from a live Sample.
 * @param {{ ts: string, cpu_percent: number, ram_percent: number, temperature_c?: number | null, gpu?: { utilization_percent: number | null } | null }} s
 * @returns {Point}
 */
export function fromSample(s) {
  return {
    t: Date.parse(s.ts),
    cpu_percent: s.cpu_percent,
    ram_percent: s.ram_percent,
    gpu_percent: s.gpu ? s.gpu.utilization_percent : null,
    temperature_c: s.temperature_c,
  };
}

/** @param {number} ts */
function clock(ts) {
  return new Date(ts).toLocaleTimeString(lang(), { hour: '2-digit', minute: '2-digit' });
}

/**
 * Draws `points` (sorted by time) into `host`: the SVG, and the table
 * alternative kept up to date in place, so a screen reader reading it is
 * not thrown out on every sample. The host's id prefixes the inner ids.
 * @param {HTMLElement} host
 * @param {Point[]} points
 * @param {number} [now]
 */
export function drawChart(host, points, now = Date.now()) {
  const id = host.id || 'chart';
  let drawing = host.querySelector(':scope > .chart-drawing');
  /** @type {HTMLTableElement | null} */
  let table = host.querySelector(':scope table.chart-table');
  if (!drawing || !table) {
    drawing = h('div', { class: 'chart-drawing' });
    table = valueTable(`${id}-table`);
    host.replaceChildren(drawing, h('div', { class: 'sr-only' }, table));
  }
  drawing.replaceChildren(drawSvg(host, id, `${id}-table`, points, now));
  fillRows(table.tBodies[0], tableRows(points, now));
}

/**
 * @param {HTMLElement} host
 * @param {string} id
 * @param {string} tableId
 * @param {Point[]} points
 * @param {number} now
 */
function drawSvg(host, id, tableId, points, now) {
  // Drawn at the host's real width so the axis text is never stretched.
  const W = Math.max(280, Math.round(host.clientWidth || 720));
  const H = W < 500 ? 180 : 230;
  const x0 = now - SPAN_MS;
  /** @param {number} ts */
  const sx = (ts) => PAD.l + ((ts - x0) / SPAN_MS) * (W - PAD.l - PAD.r);
  /** @param {number} v */
  const sy = (v) => PAD.t + (1 - Math.max(0, Math.min(100, v)) / 100) * (H - PAD.t - PAD.b);
  const grid = [];
  for (const v of [0, 25, 50, 75, 100]) {
    grid.push(h('line', { x1: PAD.l, x2: W - PAD.r, y1: sy(v), y2: sy(v), class: 'grid' }));
    grid.push(h('text', { x: PAD.l - 4, y: sy(v) + 4, class: 'axis', 'text-anchor': 'end' }, String(v)));
  }
  for (let hr = 0; hr <= 24; hr += W < 500 ? 12 : 6) {
    const ts = x0 + hr * HOUR_MS;
    grid.push(h('text', { x: sx(ts), y: H - 6, class: 'axis', 'text-anchor': hr === 0 ? 'start' : hr === 24 ? 'end' : 'middle' }, clock(ts)));
  }
  const visible = points.filter((p) => p.t >= x0);
  const lines = SERIES.map((s) => {
    // Break the line where a value is missing or a gap is longer than 10 min.
    /** @type {string[][]} */
    const segs = [];
    /** @type {string[]} */
    let cur = [];
    /** @type {number | null} */
    let prevT = null;
    for (const p of visible) {
      const v = p[s.key];
      if (v === null || v === undefined || (prevT !== null && p.t - prevT > 600000)) {
        if (cur.length) segs.push(cur);
        cur = [];
      }
      if (v !== null && v !== undefined) cur.push(`${sx(p.t).toFixed(1)},${sy(v).toFixed(1)}`);
      prevT = p.t;
    }
    if (cur.length) segs.push(cur);
    return h('g', { class: `series ${s.cls}` }, segs.map((seg) =>
      h('polyline', { points: seg.length === 1 ? `${seg[0]} ${seg[0]}` : seg.join(' '), 'stroke-dasharray': s.dash || null, fill: 'none' })));
  });
  // An image named by its title, pointing to the table with its values
  // (aria-details); the axis text inside is not read out piece by piece.
  return h('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${t('chart.title')}. ${t('chart.see_table')}`, 'aria-details': tableId, class: 'chart', width: W, height: H },
    h('title', { id: `${id}-title` }, t('chart.title')), ...grid, ...lines);
}

/**
 * The table alternative: a caption, a header row (time, then each series
 * with its unit), rows filled by fillRows().
 * @param {string} id
 */
function valueTable(id) {
  return h('table', { class: 'chart-table', id },
    h('caption', {}, t('chart.table')),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, t('chart.time')), SERIES.map((s) => h('th', { scope: 'col' }, t(s.label))))),
    h('tbody'));
}

/**
 * The index of the newest point at or before `ts` (-1: none).
 * @param {Point[]} points sorted by time
 * @param {number} ts
 */
function lastAtOrBefore(points, ts) {
  let lo = 0;
  let hi = points.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (points[mid].t <= ts) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

/**
 * The table's rows, newest first: the newest point, then the newest one at
 * least an hour older than the row before, back over the chart's 24 h (at
 * most 25 rows, found by binary search: cheap on every live sample).
 * @param {Point[]} points sorted by time
 * @param {number} now
 * @returns {{ t: number, cells: string[] }[]} each row's time and its cells as shown (time, value per series)
 */
export function tableRows(points, now) {
  const rows = [];
  let edge = Infinity;
  while (rows.length <= 24) {
    const i = lastAtOrBefore(points, edge);
    if (i < 0 || points[i].t < now - SPAN_MS) break;
    const p = points[i];
    rows.push({ t: p.t, cells: [clock(p.t), ...SERIES.map((s) => fmtNum(p[s.key]))] });
    edge = p.t - HOUR_MS;
  }
  return rows;
}

/**
 * Makes `tbody` show `rows`, changing only the cells whose text differs
 * (each row says its point's time in data-t).
 * @param {HTMLTableSectionElement} tbody
 * @param {{ t: number, cells: string[] }[]} rows
 */
function fillRows(tbody, rows) {
  while (tbody.rows.length > rows.length) tbody.deleteRow(-1);
  rows.forEach(({ t: ts, cells }, i) => {
    const tr = tbody.rows[i] || tbody.appendChild(h('tr', {}, h('th', { scope: 'row' }), SERIES.map(() => h('td'))));
    tr.dataset.t = String(ts);
    cells.forEach((text, j) => {
      const cell = tr.cells[j];
      if (cell.textContent !== text) cell.textContent = text;
    });
  });
}

export function legend() {
  return h('ul', { class: 'legend' }, SERIES.map((s) =>
    h('li', {}, h('svg', { viewBox: '0 0 30 10', class: 'swatch', 'aria-hidden': 'true' },
      h('line', { x1: 0, x2: 30, y1: 5, y2: 5, class: `series ${s.cls}`, 'stroke-dasharray': s.dash || null })), ' ', t(s.label))));
}
