// The plan: what runs now, what waits and why (capacity, an agent slot, a
// person's approval), from GET /api/plan and live from plan_delta frames.
//
// A plan_delta carries only the runs whose entry changed (and those that
// left); it applies to the plan of the same epoch whose seq is one less.
// Older deltas are skipped; a gap (a frame lost on a reconnect) or another
// epoch (the engine restarted) fetches the whole plan again. Waiting runs
// are numbered here, in (reason, order) order, as the server numbers them.

import { get } from './api.js';
import { h, replace, describeError, fmtDuration, shortId } from './dom.js';
import { feed } from './feed.js';

const RANK = { capacity: 0, blocked: 1, approval: 2 };

/** The plan after ``delta`` (entries replaced or removed, waiting runs renumbered). */
export function applyDelta(plan, delta) {
  const gone = new Set(delta.removed);
  for (const r of delta.in_progress) gone.add(r.run_id);
  for (const r of delta.planned_queued) gone.add(r.run_id);
  const running = plan.in_progress.filter((r) => !gone.has(r.run_id)).concat(delta.in_progress)
    .sort((a, b) => (a.run_id < b.run_id ? -1 : a.run_id > b.run_id ? 1 : 0));
  const waiting = plan.planned_queued.filter((r) => !gone.has(r.run_id)).concat(delta.planned_queued)
    .sort((a, b) => (RANK[a.reason] - RANK[b.reason]) || (a.order - b.order))
    .map((r, i) => ({ ...r, position: i + 1 }));
  return {
    epoch: delta.epoch, seq: delta.seq, max_active_runs: delta.max_active_runs,
    agent_slots: delta.agent_slots, slots_in_use: delta.slots_in_use,
    in_progress: running, planned_queued: waiting, new_queued: [],
  };
}

const REASONS = {
  capacity: ['…', 'waiting for capacity'],
  blocked: ['⛁', 'waiting for an agent slot'],
  approval: ['‖', 'waiting for approval'],
};

export function mountPlan(main) {
  let alive = true;
  const body = h('div', { class: 'plan', 'aria-live': 'polite' }, h('p', { text: 'Loading…' }));
  replace(main, h('div', { class: 'page-head' }, h('h1', { tabindex: '-1', text: 'Plan' })), body);
  main.querySelector('h1').focus();

  const runLink = (r) => h('a', { href: `#/runs/${encodeURIComponent(r.run_id)}` },
    h('strong', { text: r.flow }), ' ', h('span', { class: 'id', title: r.run_id, text: shortId(r.run_id) }));

  function draw(plan) {
    const now = Date.now() / 1000;
    const capacity = h('p', { class: 'capacity' },
      `Runs in progress: ${plan.in_progress.length}${plan.max_active_runs ? ` of ${plan.max_active_runs}` : ' (no limit)'} · `,
      `agent slots in use: ${plan.slots_in_use}${plan.agent_slots ? ` of ${plan.agent_slots}` : ' (no limit)'}`);
    const waiting = plan.planned_queued.length
      ? h('ol', { class: 'plan-list' }, plan.planned_queued.map((r) => {
        const [icon, word] = REASONS[r.reason] || ['?', r.reason];
        return h('li', { class: 'plan-row', dataset: { runId: r.run_id, reason: r.reason } },
          h('span', { class: 'pos', text: `#${r.position}` }), runLink(r),
          h('span', { class: 'reason' }, h('span', { 'aria-hidden': 'true', text: icon }), ` ${word}`),
          h('span', { class: 'why', text: r.detail }));
      }))
      : h('p', { class: 'hint', text: 'Nothing waits.' });
    const running = plan.in_progress.length
      ? h('ul', { class: 'plan-list' }, plan.in_progress.map((r) => h('li', { class: 'plan-row', dataset: { runId: r.run_id } },
        runLink(r), h('span', { class: 'why', text: `${r.slots_held} slot(s) held · for ${fmtDuration(now - r.since)}` }))))
      : h('p', { class: 'hint', text: 'No run is in progress.' });
    replace(body, capacity, h('h2', { text: 'Waiting' }), waiting, h('h2', { text: 'In progress' }), running);
  }

  let plan = null; // the plan as drawn (null until the first GET answers)
  let early = []; // deltas that came before it
  let fetching = false;
  let drawn = false;

  function redraw() {
    // One paint for a burst of deltas.
    if (drawn) return;
    drawn = true;
    requestAnimationFrame(() => {
      drawn = false;
      if (alive && plan) draw(plan);
    });
  }

  function take(delta) {
    if (!plan || fetching) {
      early.push(delta);
      return;
    }
    if (delta.epoch === plan.epoch && delta.seq <= plan.seq) return; // already in the plan
    if (delta.epoch !== plan.epoch || delta.seq !== plan.seq + 1) {
      fetchPlan(); // missed one (or the engine restarted): start again from the whole plan
      return;
    }
    plan = applyDelta(plan, delta);
    redraw();
  }

  function fetchPlan() {
    if (fetching) return;
    fetching = true;
    get('/api/plan').then((whole) => {
      fetching = false;
      if (!alive) return;
      plan = whole;
      const pending = early;
      early = [];
      for (const delta of pending) take(delta);
      redraw();
    }).catch((err) => {
      fetching = false;
      if (alive) replace(body, h('p', { class: 'error', text: describeError(err) }));
    });
  }

  fetchPlan();
  const stop = feed.subscribe((frame) => {
    if (frame.type === 'plan_delta') take(frame);
    else if (frame.type === 'plan_updated' && frame.plan) {
      plan = frame.plan;
      redraw();
    }
  });
  return () => {
    alive = false;
    stop();
  };
}
