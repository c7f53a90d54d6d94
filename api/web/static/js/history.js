// Runs history: newest first, filtered by status, flow, project and text
// (id, flow, question or project: all by the API, so a search reaches every
// run, not only the loaded page), paged with the API's cursor. Statuses update live from the feed; new runs are announced,
// not pushed into the list under the reader's pointer.

import { get, ApiError } from './api.js';
import { h, replace, statusBadge, fmtDuration, fmtTime, shortId, describeError, STATUS, TERMINAL } from './dom.js';
import { feed } from './feed.js';

const PAGE = 25;
const MAX_PAGE = 500;
const TYPING_MS = 250; // a search waits this long after the last key before it asks the API

export function mountHistory(main, { query }) {
  const filters = {
    status: query.get('status') || '',
    flow: query.get('flow') || '',
    project: query.get('project') || '',
    q: query.get('q') || '',
    limit: query.get('limit') || '',
  };
  const pageSize = Math.min(MAX_PAGE, Math.max(1, Number(filters.limit) || PAGE));
  let runs = [];
  let cursor = null;
  let loading = false;
  let fresh = 0;
  let alive = true;
  let projectsKnown = false;
  let typing = 0;
  let generation = 0; // answers to an older filter are dropped

  const status = h('select', { id: 'f-status', name: 'status' },
    h('option', { value: '', text: 'any status' }),
    ['queued', 'running', 'paused', 'completed', 'failed', 'rejected', 'cancelled'].map((s) => h('option', { value: s, text: STATUS[s].label })));
  const flow = h('select', { id: 'f-flow', name: 'flow' }, h('option', { value: '', text: 'any flow' }));
  const project = h('input', { id: 'f-project', name: 'project', type: 'text', placeholder: 'project id', autocomplete: 'off' });
  const text = h('input', { id: 'f-text', name: 'q', type: 'search', placeholder: 'id, flow or question', autocomplete: 'off' });
  status.value = filters.status;
  project.value = filters.project;
  text.value = filters.q;
  const projectField = h('div', { class: 'field' }, h('label', { for: 'f-project', text: 'Project' }), project);

  const list = h('ol', { class: 'runs', 'aria-label': 'Runs, newest first' });
  const summary = h('p', { class: 'summary', role: 'status' });
  const more = h('button', { type: 'button', class: 'more', hidden: true, onclick: () => load(false) }, 'Load older runs');
  const announce = h('button', { type: 'button', class: 'new-runs', hidden: true, onclick: () => load(true) });

  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter runs', onsubmit: (e) => e.preventDefault() },
    h('div', { class: 'field' }, h('label', { for: 'f-status', text: 'Status' }), status),
    h('div', { class: 'field' }, h('label', { for: 'f-flow', text: 'Flow' }), flow),
    projectField,
    h('div', { class: 'field grow' }, h('label', { for: 'f-text', text: 'Search' }), text));

  replace(main,
    h('div', { class: 'page-head' }, h('h1', { tabindex: '-1', text: 'Runs' }), h('a', { class: 'button primary', href: '#/launch' }, 'New run')),
    form, announce, summary, list, more);
  main.querySelector('h1').focus();

  function writeUrl() {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    const hash = `#/runs${q.toString() ? `?${q}` : ''}`;
    if (location.hash !== hash) history.replaceState(null, '', hash);
  }

  function row(run) {
    const ended = run.ended_at || null;
    const began = run.started_at || run.launched_at;
    const elapsed = began ? (ended || Date.now() / 1000) - began : null;
    return h('li', { class: 'run-row', dataset: { runId: run.run_id, status: run.status } },
      h('a', { href: `#/runs/${encodeURIComponent(run.run_id)}`, class: 'run-link' },
        h('span', { class: 'cell status-cell' }, statusBadge(run.status, { short: true })),
        h('span', { class: 'cell flow-cell' }, h('strong', { text: run.flow }), ' ', h('span', { class: 'band', text: run.band })),
        h('span', { class: 'cell question-cell', text: run.question || '(no question)' }),
        h('span', { class: 'cell meta-cell' },
          h('span', { class: 'id', title: run.run_id, text: shortId(run.run_id) }), ' · ',
          h('time', { datetime: new Date(run.launched_at * 1000).toISOString(), text: fmtTime(run.launched_at) }), ' · ',
          `${run.steps_done ?? 0}/${run.steps_total ?? '?'} steps`, ended ? ` · ${fmtDuration(elapsed)}` : '',
          run.project_id ? ` · ${run.project_id}` : '')));
  }

  function draw() {
    replace(list, runs.map(row));
    const count = `${runs.length}${cursor ? '+' : ''} run${runs.length === 1 && !cursor ? '' : 's'}`;
    const what = filters.q.trim() ? `${count} matching “${filters.q.trim()}”` : count;
    summary.textContent = runs.length || !loading ? (runs.length ? what : 'No runs match these filters.') : 'Loading…';
    more.hidden = !cursor;
    announce.hidden = fresh === 0;
    announce.textContent = `${fresh} new run${fresh === 1 ? '' : 's'}: show`;
  }

  async function load(reset) {
    if (loading && !reset) return;
    loading = true;
    const mine = ++generation;
    if (reset) {
      runs = [];
      cursor = null;
      fresh = 0;
    }
    const q = new URLSearchParams({ limit: String(pageSize) });
    if (filters.status) q.set('status', filters.status);
    if (filters.flow) q.set('flow', filters.flow);
    if (filters.project) q.set('project_id', filters.project);
    if (filters.q.trim()) q.set('q', filters.q.trim());
    if (!reset && cursor) q.set('cursor', cursor);
    q.set('min_position', String(feed.start ?? 0));
    draw();
    try {
      const page = await get(`/api/runs?${q}`);
      if (!alive || mine !== generation) return;
      runs = runs.concat(page.runs);
      cursor = page.next_cursor;
    } catch (err) {
      if (mine === generation) summary.textContent = describeError(err);
      return;
    } finally {
      if (mine === generation) loading = false;
    }
    if (alive) draw();
  }

  function onChange() {
    filters.status = status.value;
    filters.flow = flow.value;
    filters.project = project.value.trim();
    writeUrl();
    load(true);
  }
  status.addEventListener('change', onChange);
  flow.addEventListener('change', onChange);
  project.addEventListener('change', onChange);
  text.addEventListener('input', () => {
    filters.q = text.value;
    writeUrl();
    clearTimeout(typing);
    typing = setTimeout(() => load(true), TYPING_MS);
  });

  // Flows for the filter; projects when the server has them (a picker then replaces the text box).
  get('/api/flows').then((flows) => {
    for (const f of flows) flow.append(h('option', { value: f.name, text: f.name }));
    flow.value = filters.flow;
  }).catch(() => {});
  get('/api/projects').then((answer) => {
    const projects = Array.isArray(answer) ? answer : (answer && answer.projects) || [];
    if (!alive || projectsKnown) return;
    projectsKnown = true;
    const select = h('select', { id: 'f-project', name: 'project' }, h('option', { value: '', text: 'any project' }),
      projects.map((p) => h('option', { value: p.project_id || p.id, text: p.name || p.project_id || p.id })));
    select.value = filters.project;
    select.addEventListener('change', () => {
      filters.project = select.value;
      writeUrl();
      load(true);
    });
    project.replaceWith(select);
  }).catch((err) => {
    if (!(err instanceof ApiError)) console.error(err);
  });

  const stop = feed.subscribe((frame) => {
    if (frame.type === 'flow_run_started') {
      if (!filters.q.trim() && (!filters.flow || frame.flow_name === filters.flow) && (!filters.project || frame.project_id === filters.project)
        && (!filters.status || filters.status === 'queued' || filters.status === 'running')) {
        fresh += 1;
        draw();
      }
      return;
    }
    if (frame.type !== 'flow_run_step_updated' || !frame.run_status) return;
    const run = runs.find((r) => r.run_id === frame.run_id);
    if (!run || run.status === frame.run_status) return;
    run.status = frame.run_status;
    if (frame.step_id == null && TERMINAL.has(frame.run_status)) run.ended_at = frame.at;
    const li = list.querySelector(`[data-run-id="${CSS.escape(run.run_id)}"]`);
    if (li) li.replaceWith(row(run));
  });

  load(true);
  return () => {
    alive = false;
    clearTimeout(typing);
    stop();
  };
}
