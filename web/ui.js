// @ts-check
// Small DOM helpers: an element builder that only ever sets text (never
// HTML), the number formats (in the page's language, through Intl), a
// confirmation dialog and status badges.
import { t, lang, has, formatNumber as number } from './i18n.js';

/** The SVG elements h() makes in the SVG namespace. */
const SVG_TAGS = ['svg', 'path', 'line', 'polyline', 'g', 'text', 'rect', 'title'];
/** @typedef {'svg' | 'path' | 'line' | 'polyline' | 'g' | 'text' | 'rect' | 'title'} SvgTag */
/**
 * What h() takes as children: nodes, text (numbers become text), lists of
 * them at any depth; null, undefined and false are left out.
 * @typedef {Node | string | number | null | undefined | false | ChildList} Child
 * @typedef {Child[]} ChildList
 */
/**
 * h()'s attributes: `class`, `text`, `on<event>` handlers, properties
 * (non-string values, HTML only) and attributes; null, undefined and false
 * are left out, true is an empty attribute.
 * @typedef {Record<string, any>} Attrs
 */

/**
 * h('button', {class: 'x', onclick: fn}, 'text', child…)
 * @template {string} K
 * @param {K} tag
 * @param {Attrs | null} [attrs]
 * @param {...Child} children
 * @returns {K extends SvgTag ? SVGElementTagNameMap[K] : K extends keyof HTMLElementTagNameMap ? HTMLElementTagNameMap[K] : HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const svg = SVG_TAGS.includes(tag);
  /** @type {any} */
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (k === 'text') el.textContent = v;
    else if (k in el && !svg && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  // Any depth: a list of [' ', badge] pairs is as welcome as one badge.
  for (const c of /** @type {any[]} */ (children).flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/**
 * @template {Element} E
 * @param {E} el
 * @returns {E}
 */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// ---- Numbers in the page's language: a decimal comma in German, a point
// in English (i18n.js's formatNumber, Intl underneath). Every number the
// dashboard shows goes through these, or through t()'s parameters.

/** Powers of 1024, so the IEC names: a "GiB" is 1024³ bytes. */
const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/**
 * Bytes in IEC units (dividing by 1024), one decimal under 10:
 * "1.5 GiB" in English, "1,5 GiB" in German.
 * @param {number | null | undefined} n
 */
export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  let i = 0;
  let v = n;
  while (v >= 1024 && i < BYTE_UNITS.length - 1) { v /= 1024; i++; }
  const digits = v < 10 && i ? 1 : 0;
  return `${number(v, digits, digits)} ${BYTE_UNITS[i]}`;
}

/**
 * A percentage with `digits` decimals: "12.5 %", "12,5 %".
 * @param {number | null | undefined} v
 * @param {number} [digits]
 */
export function fmtPct(v, digits = 1) {
  return v === null || v === undefined ? '—' : `${number(v, digits, digits)} %`;
}

/**
 * A number with at most `digits` decimals.
 * @param {number | null | undefined} v
 * @param {number} [digits]
 */
export function fmtNum(v, digits = 1) {
  return v === null || v === undefined ? '—' : number(v, 0, digits);
}

/**
 * A number with exactly `digits` decimals ("2.0", "2,0").
 * @param {number | null | undefined} v
 * @param {number} digits
 */
export function fmtFixed(v, digits) {
  return v === null || v === undefined ? '—' : number(v, digits, digits);
}

/**
 * A temperature: "71.5 °C", "71,5 °C".
 * @param {number | null | undefined} v
 */
export function fmtTemp(v) {
  return v === null || v === undefined ? '—' : `${number(v, 0, 1)} °C`;
}

/** @param {string | number | null | undefined} ts */
export function fmtTime(ts) {
  if (!ts) return '—';
  return new Date(ts).toLocaleString(lang());
}

/** @param {number | null | undefined} secs */
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

/** @typedef {'ok' | 'warn' | 'crit' | 'info' | 'off'} Level */

/** @type {Record<string, string>} */
const BADGE_ICONS = { ok: '✓', warn: '!', crit: '✕', info: 'i', off: '–' };

/**
 * A level badge: colour plus an icon plus words, never colour alone.
 * @param {string} level a {@link Level}
 * @param {Child} text
 */
export function badge(level, text) {
  const icon = BADGE_ICONS[level] || '•';
  return h('span', { class: `badge ${level}` }, h('span', { 'aria-hidden': 'true', class: 'icon' }, icon), ' ', text);
}

/**
 * ok / warn / crit for a service state.
 * @param {string} state
 * @returns {Level}
 */
export function stateLevel(state) {
  if (state === 'healthy') return 'ok';
  if (['starting', 'restarting', 'unhealthy', 'unknown'].includes(state)) return 'warn';
  if (state === 'stopped') return 'off';
  return 'crit';
}

/**
 * ok / warn / crit for a usage percentage (80 % / 90 %).
 * @param {number | null | undefined} p
 * @returns {Level}
 */
export function usageLevel(p) {
  if (p === null || p === undefined) return 'off';
  if (p >= 90) return 'crit';
  if (p >= 80) return 'warn';
  return 'ok';
}

/**
 * A modal yes/no question; resolves true on confirm.
 * @param {string} question
 * @param {string} [confirmLabel]
 * @returns {Promise<boolean>}
 */
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

/**
 * A polite live region message for screen readers and sighted users alike.
 * @param {string} msg
 * @param {Level} [level]
 */
export function notify(msg, level = 'info') {
  const box = document.getElementById('toast');
  if (!box) return;
  const item = h('div', { class: `toast ${level}`, role: level === 'crit' ? 'alert' : 'status' }, msg);
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

/**
 * The message to show for an ApiError (anything else thrown: its message).
 * @param {any} e
 * @returns {string}
 */
export function errText(e) {
  if (!e) return '';
  if (e.status === 0) return t('err.network');
  if (e.status === 429) return t('err.rate', { s: e.retryAfter || '?' });
  const key = `err.${e.code}`;
  const tr = t(key);
  return tr !== key ? tr : e.message;
}

/**
 * A card with a heading; returns [section, body].
 * @param {string} title
 * @param {string} id
 * @returns {[HTMLElement, HTMLDivElement]}
 */
export function card(title, id) {
  const hid = `${id}-h`;
  const body = h('div', { class: 'card-body' });
  const sec = h('section', { class: 'card', id, 'aria-labelledby': hid }, h('h2', { id: hid }, title), body);
  return [sec, body];
}

/**
 * A label/value list. rows: [[label, value-node-or-text], …]
 * @param {[string, Child][]} rows
 */
export function dl(rows) {
  return h('dl', { class: 'kv' }, rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

/**
 * Gives every body cell of each `table.table` under root the text of its
 * column header as data-label, so narrow screens can show rows as stacked
 * "label: value" blocks (style.css) instead of a table that scrolls sideways.
 * @param {ParentNode} root
 */
export function labelTables(root) {
  for (const table of root.querySelectorAll('table.table')) {
    const heads = [...table.querySelectorAll('thead th')].map((th) => (th.textContent || '').trim());
    for (const tr of table.querySelectorAll('tbody tr')) {
      /** @type {HTMLElement[]} */ ([...tr.children]).forEach((cell, i) => {
        if (heads[i] && cell.dataset.label !== heads[i] && !cell.hasAttribute('colspan')) cell.dataset.label = heads[i];
      });
    }
  }
}

/**
 * The values inside the box's English status sentences, by reason code.
 * @type {Record<string, RegExp>}
 */
const REASON_ARGS = {
  temperature_critical: /([\d.]+) °C/,
  disk_high: /(\d+) %/,
  service_down: /^The (.+) service is down \((.+)\)\.$/,
  critical_service_down: /^The (.+) service is down \((.+)\)\.$/,
};
/** Reasons whose values are numbers: shown in the page's number format. */
const NUMERIC_REASONS = ['temperature_critical', 'disk_high'];

/**
 * A status reason from /api/system/status.
 * @typedef {{ code?: string, level?: string, message: string }} Reason
 */

/**
 * A status reason in the page's language: the box words them in English;
 * a translation is keyed by the reason's code, its values taken from the
 * English sentence. Anything not understood stays as the box said it.
 * @param {Reason} r
 */
export function reasonText(r) {
  const key = `reason.${r.code}`;
  if (!r.code || !has(key)) return r.message;
  const re = REASON_ARGS[r.code];
  if (!re) return t(key);
  const m = re.exec(r.message || '');
  const numeric = NUMERIC_REASONS.includes(r.code);
  return m ? t(key, Object.fromEntries(m.slice(1).map((v, i) => [String(i + 1), numeric ? fmtNum(Number(v)) : v]))) : r.message;
}
