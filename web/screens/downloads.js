// @ts-check
// Model downloads: suggestions from the curated list (each with what it
// needs and whether it fits this box), a form for any other name, the one
// download queue (progress, rate, time left, cancel) and the partial
// downloads left on the disk. Refusals come from the server in the page's
// language. Used by the Services screen.
import { api } from '../api.js';
import { t, lang } from '../i18n.js';
import { h, fmtBytes, fmtDuration, fmtPct, errText, notify } from '../ui.js';

const ACTIVE = new Set(['queued', 'running', 'retrying']);

/**
 * A download in the queue (/api/models/pulls).
 * @typedef {object} Pull
 * @property {number} id
 * @property {string} model
 * @property {string} state queued | running | retrying | done | failed | cancelled
 * @property {string} [status] the runtime's words for the current step
 * @property {string} [error]
 * @property {number} completed bytes
 * @property {number} [total] bytes
 * @property {number} [rate] bytes per second
 * @property {number | null} [eta_seconds]
 */
/**
 * A suggestion from /api/models/catalog.
 * @typedef {{ name: string, role: string, en: string, de: string, fits: boolean, refusal?: string, download: number, download_left?: number, memory: number }} CatalogModel
 */

/**
 * The downloads block. `onDone()` runs when a download finishes (to reload
 * the installed models). Returns { el, start, stop }.
 * @param {() => void} onDone
 */
export function downloads(onDone) {
  const suggestions = h('div', { id: 'model-suggestions' });
  const input = h('input', { id: 'pull-name', placeholder: 'llama3.2:1b', pattern: '[A-Za-z0-9][A-Za-z0-9._:-]{0,199}', autocomplete: 'off' });
  const bar = h('progress', { id: 'pull-progress', max: 100, value: 0, 'aria-label': t('svc.pull_progress') });
  const msg = h('span', { id: 'pull-msg', role: 'status' });
  const btn = h('button', { type: 'submit', class: 'primary' }, t('svc.pull'));
  const form = h('form', { class: 'row', id: 'pull-form' }, h('label', { for: 'pull-name' }, t('svc.model_name')), input, btn, bar, msg);
  const queue = h('div', { id: 'pull-queue' });
  const partials = h('div', { id: 'partials' });
  const el = h('div', { class: 'stack', id: 'downloads' }, suggestions, form, queue, partials);

  // The download this form started: its bar and message.
  /** @type {number | null} */
  let mine = null;
  /** @type {number | undefined} */
  let timer;
  let stopped = false;
  const known = new Map();

  /**
   * @param {string} model
   * @param {string} [service]
   */
  const start = async (model, service = 'llm') => {
    msg.textContent = t('svc.pulling', { m: model });
    bar.value = 0;
    try {
      const p = await api('/api/models/pulls', { method: 'POST', body: { model, service } });
      mine = p.id;
      poll();
      return true;
    } catch (e) {
      msg.textContent = errText(e);
      return false;
    }
  };

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const model = input.value.trim();
    if (!model) { msg.textContent = t('svc.model_required'); return; }
    btn.disabled = true;
    await start(model);
    btn.disabled = false;
  });

  /** @param {Pull} p */
  const speed = (p) => {
    const parts = [`${fmtBytes(p.completed)} / ${p.total ? fmtBytes(p.total) : '?'}`];
    if (p.rate) parts.push(`${fmtBytes(p.rate)}/s`);
    if (p.eta_seconds !== null && p.eta_seconds !== undefined) parts.push(t('dl.eta', { d: fmtDuration(p.eta_seconds) }));
    return parts.join(' · ');
  };

  /** @param {Pull} p */
  const row = (p) => {
    const pct = p.total ? Math.min(100, Math.round((100 * p.completed) / p.total)) : 0;
    const state = h('td', { class: 'state' }, t(`dl.state_${p.state}`));
    const detail = p.state === 'failed' ? p.error : p.state === 'retrying' ? p.status : speed(p);
    return h('tr', { 'data-pull': p.id, 'data-state': p.state },
      h('th', { scope: 'row' }, p.model),
      state,
      h('td', {}, h('progress', { max: 100, value: p.state === 'done' ? 100 : pct, 'aria-label': `${t('svc.pull_progress')} ${p.model}` }), ' ', h('span', { class: 'muted small' }, detail || '')),
      h('td', { class: 'actions' }, ACTIVE.has(p.state)
        ? h('button', { type: 'button', class: 'small secondary', 'aria-label': `${t('dl.cancel')} ${p.model}`, onclick: async () => {
          try { await api(`/api/models/pulls/${p.id}`, { method: 'DELETE' }); } catch (e) { notify(errText(e), 'crit'); }
          poll();
        } }, t('dl.cancel'))
        : null));
  };

  /** @param {Pull | undefined} p */
  const showMine = (p) => {
    if (!p) return;
    if (p.state === 'done') { bar.value = 100; msg.textContent = t('svc.pulled', { m: p.model }); mine = null; return; }
    if (p.state === 'failed' || p.state === 'cancelled') { msg.textContent = t('svc.pull_failed', { e: p.error || t('dl.state_cancelled') }); mine = null; return; }
    if (p.total) bar.value = Math.round((100 * p.completed) / p.total);
    msg.textContent = `${p.status || t('dl.state_queued')}${p.total ? ` · ${fmtPct(bar.value, 0)} · ${speed(p)}` : ''}`;
  };

  async function poll() {
    clearTimeout(timer);
    if (stopped) return;
    let active = false;
    try {
      /** @type {{ pulls: Pull[], partials: { bytes: number }[] }} */
      const r = await api('/api/models/pulls');
      active = r.pulls.some((p) => ACTIVE.has(p.state));
      queue.replaceChildren(r.pulls.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'pull-table' },
        h('caption', {}, t('dl.queue')),
        h('thead', {}, h('tr', {}, ['svc.model', 'dl.state', 'dl.progress', 'svc.actions'].map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, r.pulls.map(row)))) : '');
      for (const p of r.pulls) {
        const before = known.get(p.id);
        if (before && ACTIVE.has(before) && p.state === 'done') onDone();
        known.set(p.id, p.state);
      }
      showMine(r.pulls.find((p) => p.id === mine));
      const bytes = r.partials.reduce((a, p) => a + p.bytes, 0);
      partials.replaceChildren(r.partials.length ? h('div', { class: 'row' },
        h('span', { id: 'partials-text' }, t('dl.partials', { n: r.partials.length, b: fmtBytes(bytes) })),
        h('button', { type: 'button', class: 'secondary', id: 'remove-partials', disabled: active, onclick: async () => {
          try { const x = await api('/api/models/partials', { method: 'DELETE' }); notify(t('dl.partials_removed', { b: fmtBytes(x.bytes) }), 'ok'); } catch (e) { notify(errText(e), 'crit'); }
          poll();
        } }, t('dl.remove_partials'))) : '');
    } catch (e) { queue.replaceChildren(h('p', { class: 'muted' }, errText(e))); }
    timer = setTimeout(poll, active ? 1000 : 5000);
  }

  const suggest = async () => {
    try {
      /** @type {{ models: CatalogModel[] }} */
      const r = await api('/api/models/catalog');
      suggestions.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'suggest-table' },
        h('caption', {}, t('dl.suggested')),
        h('thead', {}, h('tr', {}, ['svc.model', 'dl.about', 'dl.download', 'dl.memory', 'svc.actions'].map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, r.models.map((m) => h('tr', { 'data-suggest': m.name, 'data-fits': String(m.fits) },
          h('th', { scope: 'row' }, m.name),
          h('td', {}, lang() === 'de' ? m.de : m.en, m.fits ? null : h('div', { class: 'refusal small' }, m.refusal)),
          h('td', {}, fmtBytes(m.download_left ?? m.download)),
          h('td', {}, fmtBytes(m.memory)),
          h('td', { class: 'actions' }, h('button', { type: 'button', class: 'small', disabled: !m.fits, 'aria-label': `${t('svc.pull')} ${m.name}`, onclick: () => start(m.name, m.role) }, t('svc.pull')))))))));
    } catch (e) { suggestions.replaceChildren(h('p', { class: 'muted' }, errText(e))); }
  };

  suggest();
  poll();
  return { el, start, stop: () => { stopped = true; clearTimeout(timer); } };
}
