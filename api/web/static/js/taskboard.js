// The task-graph dashboard of a task run's pane (DESIGN §12, §14): one row
// per task with its status (an icon and a word), phase, reason, attempt,
// worktree and branch, commits, review rounds, conflicts, failed checks,
// messages and anomalies, and the words a person may say to it: message or
// abort a running task, retry or skip a blocked (or review-capped) one.
//
// The rows are GET /api/runs/{id}/tasks, folded by the server from the
// run's log. A frame of the run (task_updated, a step's or the run's
// status, an anomaly) or a reconnect asks for it again: fetches run one at
// a time with one more queued behind, so the last drawing is at least as
// new as the last frame, and a frame seen twice only re-reads the same
// state (idempotent). Rows are updated in place: a form being typed in and
// the keyboard focus survive a redraw.

import { get, post } from './api.js';
import { h, replace, describeError } from './dom.js';
import { feed } from './feed.js';

// A task's status as an icon and a word (the colour only repeats them).
export const TASK_STATUS = {
  new_queued: { icon: '○', label: 'new', tone: 'pending' },
  planned_queued: { icon: '…', label: 'queued', tone: 'queued' },
  inprogress: { icon: '◐', label: 'running', tone: 'running' },
  blocked: { icon: '‖', label: 'blocked', tone: 'paused' },
  done: { icon: '✓', label: 'done', tone: 'completed' },
  failed: { icon: '✕', label: 'failed', tone: 'failed' },
  aborted: { icon: '■', label: 'aborted', tone: 'cancelled' },
};

// What a person may say to a task, and when.
const ACTIONS = {
  message: { button: 'Message', label: 'Message to the agent', submit: 'Send', required: true,
    hint: 'It reaches the agent at its next model turn.', done: 'Message sent' },
  abort: { button: 'Abort', label: 'Why (optional)', submit: 'Abort task', danger: true,
    hint: 'The task stops; its work is kept on its branch. Tasks that depend on it are aborted.', done: 'Abort requested' },
  retry: { button: 'Retry', label: 'Context for the next attempt (optional)', submit: 'Retry task',
    hint: 'The task starts again in its worktree, with this as context.', done: 'Retry requested' },
  skip: { button: 'Skip', label: 'Why (optional)', submit: 'Skip task', danger: true,
    hint: 'The task ends without merging; tasks that depend on it are aborted.', done: 'Skip requested' },
};

/** The actions a task takes now: message/abort while it runs, retry/skip when it waits for a person. */
export function actionsOf(task, runEnded) {
  if (runEnded) return [];
  if (task.status === 'inprogress') return ['message', 'abort'];
  if (task.status === 'blocked' || (task.status === 'planned_queued' && task.reason === 'review')) return ['retry', 'skip'];
  return [];
}

const COLUMNS = [
  ['task', 'Task'], ['status', 'Status'], ['phase', 'Phase'], ['reason', 'Reason'], ['attempt', 'Attempt'],
  ['worktree', 'Worktree / branch'], ['commits', 'Commits'], ['reviews', 'Review rounds'], ['conflicts', 'Conflicts'],
  ['checks', 'Failed checks'], ['messages', 'Messages'], ['anomalies', 'Anomalies'], ['actions', 'Actions'],
];

function taskBadge(status) {
  const known = TASK_STATUS[status] || { icon: '?', label: status || 'unknown', tone: 'unknown' };
  return h('span', { class: 'status', dataset: { status: known.tone, taskStatus: status || 'unknown' } },
    h('span', { class: 'dot', 'aria-hidden': 'true', text: known.icon }), ' ', h('span', { class: 'word', text: known.label }));
}

// The end of a worktree's path (the branch beside it names the run), the whole path as a title.
function shortPath(path) {
  const parts = (path || '').split('/').filter(Boolean);
  return parts.length > 2 ? `…/${parts.slice(-2).join('/')}` : path;
}

function count(n, warn = false) {
  const value = n || 0;
  return warn && value ? h('span', { class: 'warn' }, h('span', { 'aria-hidden': 'true', text: '⚠ ' }), String(value)) : String(value);
}

/**
 * Mount the dashboard into ``section`` for run ``runId``; ``labels`` maps a task id to its title.
 * Returns {refresh, destroy}.
 */
export function mountTaskBoard(section, { runId, labels = new Map() }) {
  let alive = true;
  let timer = 0;
  let inflight = false;
  let again = false;
  let runEnded = false;
  const rows = new Map(); // task_id -> {tr, form: tr|null, action, actionsKey}
  const summary = h('p', { class: 'hint', id: 'tasks-summary' });
  const said = h('p', { class: 'hint', role: 'status', id: 'tasks-said' });
  const body = h('tbody');
  const table = h('table', { class: 'taskboard', id: 'taskboard', 'aria-labelledby': 'tasks-title' },
    h('thead', {}, h('tr', {}, COLUMNS.map(([key, title]) => h('th', { scope: 'col', dataset: { col: key }, text: title })))),
    body);
  replace(section, h('div', { class: 'roster-head' }, h('h2', { id: 'tasks-title', text: 'Tasks' }), summary),
    h('div', { class: 'table-wrap' }, table), said);

  function cell(key, ...children) {
    const title = COLUMNS.find(([k]) => k === key)[1];
    return h('td', { dataset: { field: key, label: title } }, ...children);
  }

  function cells(task) {
    const label = labels.get(task.task_id);
    // A running task's reason is its phase and its detail the attempt: both have their own columns.
    const reason = task.status === 'inprogress' ? ''
      : [task.reason, task.detail && task.detail !== task.merge_commit ? task.detail : ''].filter(Boolean).join(': ');
    const commits = (task.commits || []).length;
    return [
      h('th', { scope: 'row', dataset: { field: 'task', label: 'Task' } }, h('code', { text: task.task_id }),
        label && label !== task.task_id ? h('span', { class: 'task-title', text: ` ${label}` }) : null),
      cell('status', taskBadge(task.status)),
      cell('phase', task.phase || '—'),
      cell('reason', h('span', { class: 'reason', text: reason || '—', title: reason })),
      cell('attempt', String(task.attempt || 0)),
      cell('worktree', task.branch ? h('code', { class: 'branch', text: task.branch }) : '—',
        task.worktree ? h('span', { class: 'path', title: task.worktree, text: task.worktree_removed ? ' (worktree removed)' : ` ${shortPath(task.worktree)}` }) : null,
        task.branch && task.branch_deleted ? h('span', { class: 'path', text: ' (branch deleted)' }) : null),
      cell('commits', String(commits),
        task.merge_commit ? h('span', { class: 'merge', title: task.merge_commit }, ' · merged ', h('code', { text: task.merge_commit.slice(0, 7) })) : null),
      cell('reviews', String(task.review_rounds || 0), task.rejections ? h('span', { class: 'sub', text: ` (${task.rejections} rejected)` }) : null),
      cell('conflicts', count(task.conflicts, true)),
      cell('checks', count(task.checks_failed, true)),
      cell('messages', String(task.messages || 0), task.notices ? h('span', { class: 'sub', text: ` · ${task.notices} notice${task.notices === 1 ? '' : 's'}` }) : null),
      cell('anomalies', count(task.anomalies, true)),
    ];
  }

  function actionCell(task, row) {
    const td = cell('actions');
    const allowed = actionsOf(task, runEnded);
    if (!allowed.length) td.append('—');
    else {
      td.append(h('div', { class: 'row-actions' }, allowed.map((action) => h('button', {
        type: 'button', class: ACTIONS[action].danger ? 'danger' : '', 'aria-label': `${ACTIONS[action].button} task ${task.task_id}`,
        'aria-expanded': String(row.action === action), dataset: { action },
        onclick: () => openForm(task.task_id, row.action === action ? null : action),
      }, ACTIONS[action].button))));
    }
    return td;
  }

  function formRow(taskId, action) {
    const spec = ACTIONS[action];
    const id = `task-${action}-${taskId}`;
    const text = h('textarea', { id, rows: '2', required: spec.required, autocomplete: 'off' });
    const status = h('p', { class: 'hint', role: 'status' });
    const submit = h('button', { type: 'submit', class: spec.danger ? 'danger' : 'primary' }, spec.submit);
    const form = h('form', { class: 'task-word', 'aria-label': `${spec.button} task ${taskId}` },
      h('label', { for: id, text: spec.label }), text, h('p', { class: 'hint', text: spec.hint }),
      h('div', { class: 'buttons' }, submit,
        h('button', { type: 'button', onclick: () => { openForm(taskId, null); focusAction(taskId, action); } }, 'Close')),
      status);
    form.addEventListener('keydown', (e) => {
      if (e.key !== 'Escape') return;
      e.preventDefault();
      openForm(taskId, null);
      focusAction(taskId, action);
    });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (spec.required && !text.value.trim()) {
        status.textContent = 'Write the message first.';
        text.focus();
        return;
      }
      submit.disabled = true;
      status.textContent = 'Sending…';
      try {
        await post(`/api/runs/${encodeURIComponent(runId)}/steps/${encodeURIComponent(taskId)}/${action}`, { text: text.value });
        said.textContent = `${spec.done}: task ${taskId}.`;
        openForm(taskId, null);
        focusAction(taskId, action);
        schedule(0);
      } catch (err) {
        status.textContent = describeError(err);
        submit.disabled = false;
      }
    });
    const tr = h('tr', { class: 'task-form', dataset: { taskId, action } }, h('td', { colspan: String(COLUMNS.length) }, form));
    return { tr, text };
  }

  function focusAction(taskId, action) {
    const row = rows.get(taskId);
    const button = row && row.tr.querySelector(`button[data-action="${action}"]`);
    if (button) button.focus();
  }

  function openForm(taskId, action) {
    const row = rows.get(taskId);
    if (!row) return;
    if (row.form) row.form.remove();
    row.form = null;
    row.action = action;
    if (action) {
      const { tr, text } = formRow(taskId, action);
      row.form = tr;
      row.tr.after(tr);
      text.focus();
    }
    for (const b of row.tr.querySelectorAll('button[data-action]')) b.setAttribute('aria-expanded', String(b.dataset.action === action));
  }

  function draw(answer) {
    runEnded = ['completed', 'failed', 'rejected', 'cancelled'].includes(answer.status);
    const tasks = answer.tasks || [];
    const seen = new Set();
    let before = null; // the node the next task's row goes after
    for (const task of tasks) {
      seen.add(task.task_id);
      let row = rows.get(task.task_id);
      if (!row) {
        row = { tr: h('tr', { class: 'task-row', dataset: { taskId: task.task_id } }), form: null, action: null, actionsKey: '' };
        rows.set(task.task_id, row);
      }
      const tr = row.tr;
      tr.dataset.status = task.status;
      tr.dataset.phase = task.phase || '';
      tr.dataset.reason = task.reason || '';
      // Every cell but the actions: replaced (they hold no focus); the actions only when they change.
      const fresh = cells(task);
      const actionsKey = actionsOf(task, runEnded).join(',');
      const focusedAction = tr.contains(document.activeElement) ? document.activeElement.dataset.action : null;
      if (actionsKey !== row.actionsKey || !tr.querySelector('td[data-field=actions]')) {
        if (row.action && !actionsKey.split(',').includes(row.action)) openForm(task.task_id, null);
        replace(tr, fresh, actionCell(task, row));
        row.actionsKey = actionsKey;
        if (focusedAction) tr.querySelector(`button[data-action="${focusedAction}"]`)?.focus();
      } else {
        const actions = tr.querySelector('td[data-field=actions]');
        for (const old of [...tr.children]) if (old !== actions) old.remove();
        tr.prepend(...fresh);
      }
      const place = before ? before.nextSibling : body.firstChild;
      if (place !== tr) body.insertBefore(tr, place);
      if (row.form && tr.nextSibling !== row.form) tr.after(row.form);
      before = row.form || tr;
    }
    for (const [id, row] of rows) {
      if (seen.has(id)) continue;
      row.tr.remove();
      if (row.form) row.form.remove();
      rows.delete(id);
    }
    const done = tasks.filter((t) => t.status === 'done').length;
    const running = tasks.filter((t) => t.status === 'inprogress').length;
    const waiting = tasks.filter((t) => actionsOf(t, false).includes('retry')).length;
    const bits = [`${done} of ${tasks.length} done`];
    if (running) bits.push(`${running} running`);
    if (waiting) bits.push(`${waiting} waiting for you`);
    if (answer.integration_head) bits.push(`integration at ${answer.integration_head.slice(0, 7)}`);
    summary.textContent = bits.join(' · ');
    section.dataset.loaded = '1';
  }

  async function refresh() {
    if (!alive) return;
    if (inflight) {
      again = true;
      return;
    }
    inflight = true;
    try {
      const answer = await get(`/api/runs/${encodeURIComponent(runId)}/tasks`);
      if (alive) draw(answer);
    } catch (err) {
      if (alive) summary.textContent = `The tasks could not be read: ${describeError(err)}`;
    } finally {
      inflight = false;
      if (again && alive) {
        again = false;
        refresh();
      }
    }
  }

  function schedule(ms = 80) {
    clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  }

  const RELEVANT = new Set(['task_updated', 'flow_run_step_updated', 'flow_run_started', 'anomaly']);
  const stopFeed = feed.subscribe((frame) => {
    if (frame.run_id === runId && RELEVANT.has(frame.type)) schedule();
  });
  const stopState = feed.onState((state) => { if (state === 'live') schedule(); }); // caught up after a drop
  refresh();

  return {
    refresh: () => schedule(0),
    destroy() {
      alive = false;
      clearTimeout(timer);
      stopFeed();
      stopState();
    },
  };
}
