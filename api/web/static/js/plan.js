// The plan: what runs now, what waits and why (capacity, an agent slot, a
// person's approval), from GET /api/plan and live from plan_updated frames.

import { get } from './api.js';
import { h, replace, describeError, fmtDuration, shortId } from './dom.js';
import { feed } from './feed.js';

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

  get('/api/plan').then((plan) => alive && draw(plan)).catch((err) => alive && replace(body, h('p', { class: 'error', text: describeError(err) })));
  const stop = feed.subscribe((frame) => {
    if (frame.type === 'plan_updated' && frame.plan) draw(frame.plan);
  });
  return () => {
    alive = false;
    stop();
  };
}
