// Small DOM helpers: an element builder that only ever sets text (never
// HTML), formatters, a confirmation dialog and status badges.
import { t, lang, has } from './i18n.js';

/** h('button', {class: 'x', onclick: fn}, 'text', child…) */
export function h(tag, attrs = {}, ...children) {
  const svg = ['svg', 'path', 'line', 'polyline', 'g', 'text', 'rect', 'title'].includes(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (k === 'text') el.textContent = v;
    else if (k in el && !svg && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 && i ? 1 : 0)} ${u[i]}`;
}

export function fmtPct(v) {
  return v === null || v === undefined ? '—' : `${v.toFixed(1)} %`;
}

export function fmtNum(v, digits = 1) {
  return v === null || v === undefined ? '—' : v.toLocaleString(lang(), { maximumFractionDigits: digits });
}

export function fmtTime(ts) {
  if (!ts) return '—';
  return new Date(ts).toLocaleString(lang());
}

export function fmtDuration(secs) {
  if (secs === null || secs === undefined) return '—';
  const s = Math.floor(secs);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  if (d) return `${d} ${t('unit.d')} ${hh} ${t('unit.h')}`;
  if (hh) return `${hh} ${t('unit.h')} ${mm} ${t('unit.min')}`;
  return `${mm} ${t('unit.min')} ${s % 60} ${t('unit.s')}`;
}

/** A level badge: colour plus an icon plus words, never colour alone. */
export function badge(level, text) {
  const icon = { ok: '✓', warn: '!', crit: '✕', info: 'i', off: '–' }[level] || '•';
  return h('span', { class: `badge ${level}` }, h('span', { 'aria-hidden': 'true', class: 'icon' }, icon), ' ', text);
}

/** ok / warn / crit for a service state. */
export function stateLevel(state) {
  if (state === 'healthy') return 'ok';
  if (['starting', 'restarting', 'unhealthy', 'unknown'].includes(state)) return 'warn';
  if (state === 'stopped') return 'off';
  return 'crit';
}

/** ok / warn / crit for a usage percentage (80 % / 90 %). */
export function usageLevel(p) {
  if (p === null || p === undefined) return 'off';
  if (p >= 90) return 'crit';
  if (p >= 80) return 'warn';
  return 'ok';
}

/** A modal yes/no question; resolves true on confirm. */
export function confirmDialog(question, confirmLabel) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-q' },
      h('p', { id: 'confirm-q' }, question),
      h('div', { class: 'row' },
        h('button', { type: 'button', class: 'secondary', 'data-action': 'cancel', onclick: () => dlg.close('no') }, t('common.cancel')),
        h('button', { type: 'button', class: 'primary', 'data-action': 'confirm', onclick: () => dlg.close('yes') }, confirmLabel || t('common.confirm'))));
    dlg.addEventListener('close', () => { dlg.remove(); resolve(dlg.returnValue === 'yes'); });
    document.body.append(dlg);
    dlg.showModal();
  });
}

/** A polite live region message for screen readers and sighted users alike. */
export function notify(msg, level = 'info') {
  const box = document.getElementById('toast');
  if (!box) return;
  const item = h('div', { class: `toast ${level}`, role: level === 'crit' ? 'alert' : 'status' }, msg);
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

/** The message to show for an ApiError. */
export function errText(e) {
  if (!e) return '';
  if (e.status === 0) return t('err.network');
  if (e.status === 429) return t('err.rate', { s: e.retryAfter || '?' });
  const key = `err.${e.code}`;
  const tr = t(key);
  return tr !== key ? tr : e.message;
}

/** A card with a heading; returns [section, body]. */
export function card(title, id) {
  const hid = `${id}-h`;
  const body = h('div', { class: 'card-body' });
  const sec = h('section', { class: 'card', id, 'aria-labelledby': hid }, h('h2', { id: hid }, title), body);
  return [sec, body];
}

/** A label/value list. rows: [[label, value-node-or-text], …] */
export function dl(rows) {
  return h('dl', { class: 'kv' }, rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

/**
 * Gives every body cell of each `table.table` under root the text of its
 * column header as data-label, so narrow screens can show rows as stacked
 * "label: value" blocks (style.css) instead of a table that scrolls sideways.
 */
export function labelTables(root) {
  for (const table of root.querySelectorAll('table.table')) {
    const heads = [...table.querySelectorAll('thead th')].map((th) => th.textContent.trim());
    for (const tr of table.querySelectorAll('tbody tr')) {
      [...tr.children].forEach((cell, i) => {
        if (heads[i] && cell.dataset.label !== heads[i] && !cell.hasAttribute('colspan')) cell.dataset.label = heads[i];
      });
    }
  }
}

// The values inside the box's English status sentences, by reason code.
const REASON_ARGS = {
  temperature_critical: /([\d.]+) °C/,
  disk_high: /(\d+) %/,
  service_down: /^The (.+) service is down \((.+)\)\.$/,
  critical_service_down: /^The (.+) service is down \((.+)\)\.$/,
};

/**
 * A status reason in the page's language: the box words them in English;
 * a translation is keyed by the reason's code, its values taken from the
 * English sentence. Anything not understood stays as the box said it.
 */
export function reasonText(r) {
  const key = `reason.${r.code}`;
  if (!r.code || !has(key)) return r.message;
  const re = REASON_ARGS[r.code];
  if (!re) return t(key);
  const m = re.exec(r.message || '');
  return m ? t(key, Object.fromEntries(m.slice(1).map((v, i) => [String(i + 1), v]))) : r.message;
}
