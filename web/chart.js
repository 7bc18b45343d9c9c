// The 24 h chart of CPU, RAM, GPU and temperature, drawn as SVG polylines.
// Percentages and °C share one 0–100 axis. Series differ by colour and by
// dash pattern, and the legend names them, so colour is never the only cue.
import { h } from './ui.js';
import { t, lang } from './i18n.js';

export const SERIES = [
  { key: 'cpu_percent', label: 'chart.cpu', cls: 's-cpu', dash: '' },
  { key: 'ram_percent', label: 'chart.ram', cls: 's-ram', dash: '6 3' },
  { key: 'gpu_percent', label: 'chart.gpu', cls: 's-gpu', dash: '2 3' },
  { key: 'temperature_c', label: 'chart.temp', cls: 's-temp', dash: '10 3 2 3' },
];

const PAD = { l: 34, r: 8, t: 8, b: 22 };
export const SPAN_MS = 24 * 3600 * 1000;

/** Points from a /api/metrics/history body: [{t, cpu_percent, …}] */
export function fromHistory(hist) {
  const out = hist.t.map((ts) => ({ t: ts }));
  for (const s of hist.series || []) {
    s.avg.forEach((v, i) => { if (out[i]) out[i][s.name] = v; });
  }
  return out;
}

/** One point from a live Sample. */
export function fromSample(s) {
  return {
    t: Date.parse(s.ts),
    cpu_percent: s.cpu_percent,
    ram_percent: s.ram_percent,
    gpu_percent: s.gpu ? s.gpu.utilization_percent : null,
    temperature_c: s.temperature_c,
  };
}

export function drawChart(svgHost, points, now = Date.now()) {
  // Drawn at the host's real width so the axis text is never stretched.
  const W = Math.max(280, Math.round(svgHost.clientWidth || 720));
  const H = W < 500 ? 180 : 230;
  const x0 = now - SPAN_MS;
  const sx = (ts) => PAD.l + ((ts - x0) / SPAN_MS) * (W - PAD.l - PAD.r);
  const sy = (v) => PAD.t + (1 - Math.max(0, Math.min(100, v)) / 100) * (H - PAD.t - PAD.b);
  const grid = [];
  for (const v of [0, 25, 50, 75, 100]) {
    grid.push(h('line', { x1: PAD.l, x2: W - PAD.r, y1: sy(v), y2: sy(v), class: 'grid' }));
    grid.push(h('text', { x: PAD.l - 4, y: sy(v) + 4, class: 'axis', 'text-anchor': 'end' }, String(v)));
  }
  for (let hr = 0; hr <= 24; hr += W < 500 ? 12 : 6) {
    const ts = x0 + hr * 3600 * 1000;
    const label = new Date(ts).toLocaleTimeString(lang(), { hour: '2-digit', minute: '2-digit' });
    grid.push(h('text', { x: sx(ts), y: H - 6, class: 'axis', 'text-anchor': hr === 0 ? 'start' : hr === 24 ? 'end' : 'middle' }, label));
  }
  const visible = points.filter((p) => p.t >= x0);
  const lines = SERIES.map((s) => {
    // Break the line where a value is missing or a gap is longer than 10 min.
    const segs = [];
    let cur = [];
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
  const svg = h('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'chart-title', class: 'chart', width: W, height: H },
    h('title', { id: 'chart-title' }, t('chart.title')), ...grid, ...lines);
  svgHost.replaceChildren(svg);
}

export function legend() {
  return h('ul', { class: 'legend' }, SERIES.map((s) =>
    h('li', {}, h('svg', { viewBox: '0 0 30 10', class: 'swatch', 'aria-hidden': 'true' },
      h('line', { x1: 0, x2: 30, y1: 5, y2: 5, class: `series ${s.cls}`, 'stroke-dasharray': s.dash || null })), ' ', t(s.label))));
}
