// The run pane: a header (flow, status, elapsed, tokens, actions), the
// report on top once the run has ended, the roster of steps with their
// statuses, and one step expanded at a time, following the active step
// until the reader picks one. Live deltas, tool calls and results show
// inline in the expanded step; a paused step takes approve/reject with a
// comment; task steps take a message or an abort (STEP_CONTROLS).
//
// State is a snapshot read after the feed's start position, then the
// frames after the snapshot's position, folded by runmodel.apply: a frame
// seen twice (a reconnect, the ring replay) changes nothing.

import { get, post, request } from './api.js';
import { h, replace, statusBadge, fmtDuration, fmtTime, shortId, describeError, toast, TERMINAL } from './dom.js';
import { feed } from './feed.js';
import { render as markdown } from './markdown.js';
import { perf } from './perf.js';
import { mountTaskBoard } from './taskboard.js';
import {
  activeStep, apply, fromSnapshot, itemCounts, markJoined, markMissed, STEP_CONTROLS, stepTokens, takeItems, tokens,
} from './runmodel.js';

const NARROW = '(max-width: 720px)';
const PARENT_LINKS = { subflow: 'Child of', fork: 'Forked from', retry: 'Retry of' };
const CLIP = 160; // characters of a map item or its result shown inline
const ITEMS_SHOWN = 200; // a map's items listed in its detail (and its failed ones after them, as many again)

function clip(text) {
  const s = String(text);
  return s.length > CLIP ? `${s.slice(0, CLIP)}…` : s;
}

// A link to another run: a plain run id shortened as elsewhere, a child's (PARENT-STEP-N) whole.
function runLink(id, cls) {
  return h('a', { class: cls, href: `#/runs/${encodeURIComponent(id)}`, title: id, text: id.length > 26 ? id : shortId(id) });
}

export function mountRun(main, { runId }) {
  let alive = true;
  let model = null;
  let selected = null;
  let follow = true;
  let stopFeed = () => {};
  let stopState = () => {};
  let ticker = 0;
  let usageTimer = 0;
  let live = null; // {step_id, node: Text} the text node deltas of the expanded step go to
  let auditLog = null; // a promise of the run's events by position: tool results the snapshot does not carry
  const loadingItems = new Set(); // map steps whose items are read (or being read) from the run's detail
  const narrow = window.matchMedia(NARROW);

  const heading = h('h1', { tabindex: '-1' }, 'Run ', h('span', { class: 'id', text: shortId(runId) }));
  const headStatus = h('span', { class: 'head-status' });
  const question = h('p', { class: 'question' });
  const stats = h('dl', { class: 'stats' });
  const notice = h('p', { class: 'notice', role: 'status', hidden: true });
  const cancelBtn = h('button', { type: 'button', class: 'danger', id: 'cancel', 'aria-label': 'Cancel run' },
    h('span', { 'aria-hidden': 'true', text: '■ ' }), 'Cancel');
  const copyBtn = h('button', { type: 'button', id: 'copy-report', 'aria-label': 'Copy report', disabled: true },
    h('span', { 'aria-hidden': 'true', text: '❐ ' }), 'Copy');
  const mdBtn = h('button', { type: 'button', id: 'download-md', 'aria-label': 'Download report as markdown', disabled: true },
    h('span', { 'aria-hidden': 'true', text: '⤓ ' }), '.md');
  const logBtn = h('button', { type: 'button', id: 'download-log', 'aria-label': 'Download audit log as JSON lines' },
    h('span', { 'aria-hidden': 'true', text: '⤓ ' }), 'Log');
  const controls = h('div', { class: 'controls', role: 'toolbar', 'aria-label': 'Run actions' }, cancelBtn, copyBtn, mdBtn, logBtn);
  const reason = h('input', { id: 'cancel-reason', type: 'text', placeholder: 'optional', autocomplete: 'off' });
  const confirm = h('form', { class: 'confirm', hidden: true, 'aria-label': 'Confirm cancel' },
    h('label', { for: 'cancel-reason', text: 'Reason' }), reason,
    h('div', { class: 'buttons' },
      h('button', { type: 'submit', class: 'danger', id: 'cancel-confirm' }, 'Cancel run'),
      h('button', { type: 'button', id: 'cancel-keep', onclick: () => { confirm.hidden = true; cancelBtn.focus(); } }, 'Keep running')));
  const report = h('section', { class: 'report', id: 'report', hidden: true, 'aria-labelledby': 'report-title' },
    h('h2', { id: 'report-title', text: 'Report' }), h('div', { class: 'markdown' }));
  const roster = h('ol', { class: 'roster', 'aria-label': 'Steps' });
  const followBtn = h('button', { type: 'button', class: 'link', id: 'follow', hidden: true }, 'Follow the active step');
  const detail = h('section', { class: 'detail', id: 'step-detail', 'aria-live': 'off', hidden: true });
  const side = h('div', { class: 'detail-col' }, detail);
  const taskSection = h('section', { class: 'tasks', id: 'tasks', hidden: true, 'aria-labelledby': 'tasks-title' });
  let board = null; // the task-graph dashboard, on a task run's pane

  replace(main, h('article', { class: 'run-pane', dataset: { runId } },
    h('header', { class: 'run-head' },
      h('div', { class: 'title-row' }, heading, headStatus),
      question, stats, controls, confirm, notice),
    report,
    taskSection,
    h('div', { class: 'run-body' },
      h('section', { class: 'roster-col', 'aria-labelledby': 'steps-title' },
        h('div', { class: 'roster-head' }, h('h2', { id: 'steps-title', text: 'Steps' }), followBtn), roster),
      side)));
  heading.focus();

  // -- header ----------------------------------------------------------------------------------

  function elapsed() {
    const run = model.run;
    const begin = run.started_at || run.launched_at;
    if (!begin) return null;
    const end = TERMINAL.has(run.status) ? (run.ended_at || begin) : Date.now() / 1000;
    return Math.max(0, end - begin);
  }

  function drawHead() {
    const run = model.run;
    heading.replaceChildren(h('span', { class: 'flow', text: run.flow || 'run' }), ' ', h('span', { class: 'id', title: run.run_id, text: shortId(run.run_id) }));
    replace(headStatus, statusBadge(run.status));
    headStatus.dataset.status = run.status;
    question.textContent = run.question || '';
    const steps = [...model.steps.values()];
    const done = steps.filter((s) => TERMINAL.has(s.status) || s.status === 'skipped').length;
    const used = tokens(model);
    const calls = steps.reduce((n, s) => n + s.tools.size, 0);
    const items = [
      ['Status', statusBadge(run.status)],
      ['Elapsed', h('span', { id: 'elapsed', text: fmtDuration(elapsed()) })],
      ['Tokens', used === null ? h('span', { id: 'tokens', text: '—', title: 'no backend reported token counts' })
        : h('span', { id: 'tokens', title: `prompt ${used.prompt.toLocaleString()}, completion ${used.completion.toLocaleString()}` },
          used.total.toLocaleString(), h('span', { class: 'sub', text: ` (${used.prompt.toLocaleString()} in · ${used.completion.toLocaleString()} out)` }))],
      ['Size', run.band || '—'],
      ['Steps', `${done} of ${steps.length}`],
      ['Launched', fmtTime(run.launched_at)],
    ];
    if (calls) items.splice(3, 0, ['Tool calls', h('span', { id: 'tool-calls', text: String(calls) })]);
    if (run.project_id) items.push(['Project', run.project_id]);
    if (run.parent_run_id) items.push([PARENT_LINKS[run.parent_link] || 'From run', runLink(run.parent_run_id, 'parent-run'), run.forked_from ? ` (step ${run.forked_from})` : '']);
    if (run.anomalies) items.push(['Anomalies', h('span', { class: 'warn' }, h('span', { 'aria-hidden': 'true', text: '⚠ ' }), String(run.anomalies))]);
    replace(stats, items.map(([k, ...v]) => h('div', {}, h('dt', { text: k }), h('dd', {}, ...v))));
    const ended = TERMINAL.has(run.status);
    cancelBtn.hidden = ended;
    if (ended) confirm.hidden = true;
    copyBtn.disabled = !model.report;
    mdBtn.disabled = !model.report;
    if (run.status === 'queued') showNotice(`Queued: ${run.queue_reason || 'waiting for capacity'}${run.plan_position ? ` (position ${run.plan_position} in the plan)` : ''}.`);
    else if (notice.dataset.kind === 'queued') hideNotice();
    if (ended && ticker) {
      clearInterval(ticker);
      ticker = 0;
    }
  }

  function showNotice(text, kind = 'queued') {
    notice.textContent = text;
    notice.dataset.kind = kind;
    notice.hidden = false;
  }

  function hideNotice() {
    notice.hidden = true;
    notice.dataset.kind = '';
  }

  function drawReport() {
    report.hidden = !model.report;
    if (model.report) {
      const body = report.querySelector('.markdown');
      if (body.dataset.source !== model.report) {
        replace(body, markdown(model.report));
        body.dataset.source = model.report;
      }
    }
  }

  // -- roster ----------------------------------------------------------------------------------

  function stepMeta(step) {
    const bits = [];
    if (step.agent) bits.push(step.agent);
    else if (step.kind) bits.push(step.kind);
    if (step.attempt > 1) bits.push(`attempt ${step.attempt}`);
    if (step.duration_s !== null && step.duration_s !== undefined && TERMINAL.has(step.status)) bits.push(fmtDuration(step.duration_s));
    const used = stepTokens(step.usage);
    if (used) bits.push(`${used.total.toLocaleString()} tokens`);
    return bits.join(' · ');
  }

  function stepButton(step) {
    const open = step.step_id === selected;
    return h('button', {
      type: 'button', class: 'step', id: `step-${step.step_id}`, 'aria-expanded': String(open), 'aria-controls': 'step-detail',
      dataset: { stepId: step.step_id, status: step.status },
      onclick: () => toggle(step.step_id),
    }, statusBadge(step.status, { short: true }), ' ', h('span', { class: 'label', text: step.label }),
    h('span', { class: 'meta', text: stepMeta(step) }));
  }

  function drawRoster() {
    const items = [...model.steps.values()].map((step) => {
      const li = roster.querySelector(`li[data-step-id="${CSS.escape(step.step_id)}"]`) || h('li', { dataset: { stepId: step.step_id } });
      const button = li.querySelector('button.step');
      if (button) swapButton(button, stepButton(step));
      else li.prepend(stepButton(step));
      li.dataset.status = step.status;
      return li;
    });
    if (items.length !== roster.children.length || items.some((li, i) => roster.children[i] !== li)) replace(roster, items);
  }

  function drawStep(stepId) {
    const step = model.steps.get(stepId);
    const li = roster.querySelector(`li[data-step-id="${CSS.escape(stepId)}"]`);
    if (!step || !li) {
      drawRoster();
      return;
    }
    li.dataset.status = step.status;
    swapButton(li.querySelector('button.step'), stepButton(step));
  }

  // A redrawn step keeps the keyboard focus when it had it (frames arrive while a person tabs through).
  function swapButton(old, fresh) {
    const focused = document.activeElement === old;
    old.replaceWith(fresh);
    if (focused) fresh.focus();
  }

  function toggle(stepId) {
    if (selected === stepId) {
      select(null);
      follow = false;
    } else {
      select(stepId);
      follow = stepId === activeStep(model);
    }
    drawFollow();
  }

  function drawFollow() {
    followBtn.hidden = follow || TERMINAL.has(model.run.status) || !activeStep(model);
  }

  followBtn.addEventListener('click', () => {
    follow = true;
    const a = activeStep(model);
    if (a) select(a);
    drawFollow();
  });

  function select(stepId) {
    const before = selected;
    selected = stepId;
    for (const id of [before, stepId]) if (id && model.steps.has(id)) drawStep(id);
    drawDetail();
  }

  function placeDetail() {
    const li = selected && roster.querySelector(`li[data-step-id="${CSS.escape(selected)}"]`);
    const place = narrow.matches && li ? li : side;
    if (detail.parentNode === place) return;
    // Moving the detail blurs what has the focus in it: a person typing a comment while the layout
    // changes (a phone turned, a window resized) keeps typing where they were.
    const focused = detail.contains(document.activeElement) ? document.activeElement : null;
    place.append(detail);
    if (focused) focused.focus();
  }

  // -- the expanded step -----------------------------------------------------------------------

  // A tool call and, once it has one, its result: the state is an icon and a word (running, ok,
  // or failed with the outcome: malformed, denied, ...), never a colour alone.
  function toolRow(call) {
    const failed = call.done && (call.ok === false || !!call.error);
    const state = !call.done ? ['…', 'running'] : failed ? ['✕', 'failed'] : ['✓', 'ok'];
    const word = failed && call.outcome && call.outcome !== 'ok' ? `failed: ${call.outcome}` : state[1];
    const args = typeof call.arguments === 'string' ? call.arguments : JSON.stringify(call.arguments ?? {});
    const size = call.done && call.bytes ? `${call.bytes.toLocaleString()} bytes${call.truncated ? ', truncated for the model' : ''}` : '';
    let result = null;
    if (call.done && (call.error || typeof call.result === 'string')) {
      result = h('pre', { class: `tool-result${failed ? ' error' : ''}`, text: call.error || call.result });
    } else if (call.done && call.result_position) {
      // Reopened: the result's text is in the audit log, read when the reader asks for it.
      const body = h('pre', { class: 'tool-result', text: 'Loading…' });
      result = h('details', { class: 'tool-more' }, h('summary', { text: 'Result' }), body);
      result.addEventListener('toggle', () => {
        if (!result.open || body.dataset.loaded) return;
        body.dataset.loaded = '1';
        resultText(call.result_position).then((text) => { body.textContent = text; })
          .catch((err) => { body.textContent = describeError(err); delete body.dataset.loaded; });
      });
    }
    return h('div', { class: 'tool', role: 'group', 'aria-label': `Tool call ${call.tool || ''}${call.role ? ` by the ${call.role}` : ''}: ${word}`, dataset: { callId: call.call_id, role: call.role || '', state: state[1] } },
      h('div', { class: 'tool-head' }, h('span', { 'aria-hidden': 'true', text: '⚙ ' }), h('code', { text: call.tool || 'tool' }),
        call.role ? h('span', { class: 'tool-role', text: ` (${call.role})` }) : null,
        h('span', { class: 'tool-state' }, h('span', { 'aria-hidden': 'true', text: ` ${state[0]} ` }), word),
        size ? h('span', { class: 'tool-size', text: ` · ${size}` }) : null),
      h('pre', { class: 'tool-args', text: args }),
      result,
      call.result_cut ? h('p', { class: 'hint', text: 'The result is cut here; the audit log (Log) has it whole.' }) : null);
  }

  function resultText(position) {
    if (!auditLog) {
      auditLog = get(`/api/runs/${encodeURIComponent(runId)}/events?format=json`).then((events) => {
        const byPosition = new Map();
        for (const e of events) byPosition.set(e.position, typeof e.data === 'string' ? JSON.parse(e.data) : e.data);
        return byPosition;
      });
      auditLog.catch(() => { auditLog = null; });
    }
    return auditLog.then((byPosition) => {
      const data = byPosition.get(position);
      return data ? (data.error || data.result || '(empty)') : '(not in the audit log)';
    });
  }

  // A map step's items: how many ended, and each item with its status and result. From the run's detail
  // (the snapshot's, or read again for a map that started after it: the frames name only the items that
  // end), then kept by map_item frames.
  function mapBox(step) {
    if (!step.items_read && step.status !== 'pending' && step.status !== 'skipped') loadItems(step);
    const c = itemCounts(step);
    const summary = !c.total ? (step.status === 'pending' ? 'Its items are known once it starts.' : 'No items.')
      : `${c.completed} of ${c.total} item${c.total === 1 ? '' : 's'} done${c.failed ? `, ${c.failed} failed` : ''}${c.running ? `, ${c.running} under way` : ''}`;
    // A wide map (1,024 items) redrawn at each item's frame: the first ITEMS_SHOWN, and the failed ones after them.
    const all = step.items || [];
    const shown = all.map((it, i) => [it, i]).filter(([it, i]) => it && (i < ITEMS_SHOWN || it.status === 'failed')).slice(0, 2 * ITEMS_SHOWN);
    const hidden = all.filter(Boolean).length - shown.length;
    const rows = shown.map(([it, i]) => h('li', { class: 'map-item', dataset: { index: String(i), status: it.status } },
      h('span', { class: 'item-index', text: `#${i}` }), ' ', statusBadge(it.status || 'pending', { short: true }), ' ',
      h('span', { class: 'item', text: clip(typeof it.item === 'string' ? it.item : JSON.stringify(it.item ?? null)) }),
      it.error ? h('span', { class: 'error', text: ` — ${clip(it.error)}` }) : it.output ? h('span', { class: 'item-output', text: ` → ${clip(it.output)}` }) : ''));
    return h('div', { class: 'map-items', role: 'group', 'aria-label': 'Map items' }, h('p', { class: 'facts', text: summary }), rows.length ? h('ol', {}, rows) : null,
      hidden > 0 ? h('p', { class: 'hint', text: `${hidden.toLocaleString()} more item${hidden === 1 ? '' : 's'} not shown here (Log, or baton show --json, has them all).` }) : null);
  }

  function loadItems(step) {
    if (loadingItems.has(step.step_id)) return;
    loadingItems.add(step.step_id);
    get(`/api/runs/${encodeURIComponent(runId)}`).then((fresh) => {
      if (!alive) return;
      const found = (fresh.steps || []).find((s) => s.step_id === step.step_id);
      if (found && Array.isArray(found.items)) takeItems(step, found.items);
      if (selected === step.step_id) drawDetail();
    }).catch(() => loadingItems.delete(step.step_id)); // shown again: read again
  }

  function streamNodes(step) {
    const nodes = [];
    live = null;
    for (const seg of step.segments) {
      if (seg.call_id) nodes.push(toolRow(step.tools.get(seg.call_id) || { call_id: seg.call_id }));
      else if (seg.joined) nodes.push(h('p', { class: 'missed', text: '… this step was already running when the page opened: its earlier text shows when it ends …' }));
      else if (seg.missed) nodes.push(h('p', { class: 'missed', text: '… the stream dropped here; text sent meanwhile was missed (the full output shows when the step ends) …' }));
      else {
        const text = document.createTextNode(seg.text);
        nodes.push(h('pre', { class: 'stream' }, text));
        live = { step_id: step.step_id, node: text, seg };
      }
    }
    if (!live || nodes[nodes.length - 1] !== live.node.parentNode) {
      const text = document.createTextNode('');
      const seg = { text: '' };
      nodes.push(h('pre', { class: 'stream' }, text));
      live = { step_id: step.step_id, node: text, seg, fresh: true };
    }
    return nodes;
  }

  // What a person typed in a gate's comment box, kept across redraws (a live frame redraws the step's detail).
  const commentDrafts = new Map();

  function approvalBox(step) {
    const focused = document.activeElement && document.activeElement.id === 'approval-comment';
    const comment = h('textarea', { id: 'approval-comment', rows: '3', placeholder: 'optional: why, or what to watch for' });
    comment.value = commentDrafts.get(step.step_id) || '';
    comment.addEventListener('input', () => commentDrafts.set(step.step_id, comment.value));
    if (focused) queueMicrotask(() => { comment.focus(); comment.setSelectionRange(comment.value.length, comment.value.length); });
    const status = h('p', { class: 'hint', role: 'status' });
    const decide = async (verb) => {
      for (const b of box.querySelectorAll('button')) b.disabled = true;
      status.textContent = verb === 'approve' ? 'Approving…' : 'Rejecting…';
      try {
        await post(`/api/runs/${encodeURIComponent(runId)}/steps/${encodeURIComponent(step.step_id)}/${verb}`, { comment: comment.value });
        status.textContent = verb === 'approve' ? 'Approved; the run goes on.' : 'Rejected.';
        commentDrafts.delete(step.step_id);
      } catch (err) {
        status.textContent = describeError(err);
        for (const b of box.querySelectorAll('button')) b.disabled = false;
      }
    };
    const box = h('form', { class: 'approval', 'aria-label': 'Approve or reject', onsubmit: (e) => e.preventDefault() },
      h('h3', { text: 'Waiting for your decision' }),
      step.approval && step.approval.prompt ? h('div', { class: 'prompt markdown' }, markdown(step.approval.prompt)) : null,
      h('label', { for: 'approval-comment', text: 'Comment' }), comment,
      h('div', { class: 'buttons' },
        h('button', { type: 'button', class: 'primary', id: 'approve', onclick: () => decide('approve') }, h('span', { 'aria-hidden': 'true', text: '✓ ' }), 'Approve'),
        h('button', { type: 'button', class: 'danger', id: 'reject', onclick: () => decide('reject') }, h('span', { 'aria-hidden': 'true', text: '✕ ' }), 'Reject')),
      status);
    return box;
  }

  function taskBox(step) {
    const allowed = STEP_CONTROLS[step.kind] || [];
    if (!allowed.length || step.status !== 'running') return null;
    const text = h('textarea', { id: 'task-message', rows: '2' });
    const status = h('p', { class: 'hint', role: 'status' });
    const base = `/api/runs/${encodeURIComponent(runId)}/steps/${encodeURIComponent(step.step_id)}`;
    const send = async (what, body) => {
      status.textContent = 'Sending…';
      try {
        await post(`${base}/${what}`, body);
        status.textContent = what === 'message' ? 'Sent.' : 'Abort requested.';
        text.value = '';
      } catch (err) {
        status.textContent = describeError(err);
      }
    };
    return h('form', { class: 'task-controls', 'aria-label': 'Talk to the task', onsubmit: (e) => { e.preventDefault(); send('message', { text: text.value }); } },
      allowed.includes('message') ? [h('label', { for: 'task-message', text: 'Message to the agent' }), text] : null,
      h('div', { class: 'buttons' },
        allowed.includes('message') ? h('button', { type: 'submit', id: 'task-send' }, 'Send') : null,
        allowed.includes('abort') ? h('button', { type: 'button', class: 'danger', id: 'task-abort', onclick: () => send('abort', { reason: text.value }) }, 'Abort') : null),
      status);
  }

  function drawDetail() {
    placeDetail();
    const step = selected && model.steps.get(selected);
    detail.hidden = !step;
    live = null;
    if (!step) {
      detail.replaceChildren();
      return;
    }
    const used = stepTokens(step.usage);
    const turns = Array.isArray(step.usage.turns) ? step.usage.turns.length : 0;
    const facts = [step.kind, step.agent, step.model, step.attempt ? `attempt ${step.attempt}` : '',
      step.duration_s !== null && step.duration_s !== undefined && TERMINAL.has(step.status) ? fmtDuration(step.duration_s) : '',
      used ? `${used.total.toLocaleString()} tokens (${used.prompt.toLocaleString()} in, ${used.completion.toLocaleString()} out)` : '',
      turns > 1 ? `${turns} model turns` : '',
      step.tools.size ? `${step.tools.size} tool call${step.tools.size === 1 ? '' : 's'}` : ''].filter(Boolean);
    const parts = [
      h('div', { class: 'detail-head' }, h('h2', { id: 'detail-title', text: step.label }), statusBadge(step.status)),
      h('p', { class: 'facts', text: facts.join(' · ') }),
    ];
    for (const a of step.anomalies.values()) {
      parts.push(h('p', { class: 'anomaly' }, h('span', { 'aria-hidden': 'true', text: '⚠ ' }), `${a.kind} (${a.severity}): ${a.detail}${a.action ? ` — ${a.action}` : ''}`));
    }
    if (step.status === 'paused' && step.kind === 'task') {
      parts.push(h('p', { class: 'notice', text: 'This task waits for a person: answer it with Retry or Skip in the Tasks table above.' }));
    } else if (step.status === 'paused') parts.push(approvalBox(step));
    const task = taskBox(step);
    if (task) parts.push(task);
    if (step.child_run_id) {
      parts.push(h('p', { class: 'child-line' }, 'Child run ', runLink(step.child_run_id, 'child-run'),
        step.child_status ? ` (${step.child_status})` : ''));
    }
    if (step.kind === 'map') parts.push(mapBox(step));
    if (step.status === 'running') {
      parts.push(h('div', { class: 'stream-box', 'aria-label': 'Live output' }, streamNodes(step)));
    } else {
      const tools = [...step.tools.values()];
      if (tools.length) parts.push(h('div', { class: 'tools' }, tools.map(toolRow)));
      if (step.output) parts.push(h('pre', { class: 'stream output', text: step.output }));
      else if (step.status === 'pending') parts.push(h('p', { class: 'hint', text: step.deps.length ? `Waits for ${step.deps.join(', ')}.` : 'Not started yet.' }));
    }
    if (step.decided_by || step.comment) parts.push(h('p', { class: 'decision', text: `${step.status === 'rejected' ? 'Rejected' : 'Approved'}${step.decided_by ? ` by ${step.decided_by}` : ''}${step.comment ? `: “${step.comment}”` : ''}` }));
    if (step.error) parts.push(h('p', { class: 'error', text: step.error }));
    if (step.skip_reason) parts.push(h('p', { class: 'hint', text: `Skipped (${step.skip_reason})${step.detail ? `: ${step.detail}` : ''}` }));
    if (step.kept_from) parts.push(h('p', { class: 'hint', text: `Kept from run ${step.kept_from}: its outcome there, not run again here.` }));
    if (step.prompt && step.kind !== 'approval') parts.push(h('details', { class: 'prompt' }, h('summary', { text: 'Prompt' }), h('pre', { text: step.prompt })));
    replace(detail, parts);
    detail.dataset.stepId = step.step_id;
    detail.dataset.status = step.status;
    stickToBottom();
  }

  function appendDelta(change) {
    const step = model.steps.get(change.step_id);
    const seg = step.segments[step.segments.length - 1];
    if (!live || live.step_id !== change.step_id || !live.node.isConnected || (live.seg !== seg && !live.fresh)) {
      drawDetail(); // the text's place changed (a tool call came between): draw the stream again
      return;
    }
    if (live.fresh) {
      live.seg = seg;
      live.fresh = false;
    }
    const atBottom = nearBottom();
    live.node.appendData(change.text);
    if (atBottom) stickToBottom();
  }

  function nearBottom() {
    const scroller = document.scrollingElement;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  }

  function stickToBottom() {
    if (!selected || !follow) return;
    const streams = detail.querySelectorAll('pre.stream');
    const last = streams[streams.length - 1];
    if (last) last.scrollTop = last.scrollHeight;
  }

  // -- frames ----------------------------------------------------------------------------------

  function refreshUsage() {
    clearTimeout(usageTimer);
    usageTimer = setTimeout(async () => {
      try {
        const fresh = await get(`/api/runs/${encodeURIComponent(runId)}`);
        if (!alive) return;
        if (fresh.run && fresh.run.usage) model.run.usage = fresh.run.usage;
        for (const s of fresh.steps) {
          const step = model.steps.get(s.step_id);
          if (step) {
            step.usage = s.usage || {};
            if (!step.prompt && s.prompt) step.prompt = s.prompt;
          }
        }
        drawHead();
        drawRoster();
        if (selected && TERMINAL.has(model.steps.get(selected)?.status)) drawDetail(); // its tokens (not a form being typed in)
      } catch {
        // the next step's end tries again
      }
    }, 300);
  }

  function onFrame(frame) {
    const change = apply(model, frame);
    if (!change) return;
    if (change.what === 'delta') {
      if (change.step_id === selected) {
        appendDelta(change);
        perf.shown(frame.received);
      }
      return;
    }
    if (change.what === 'run') {
      drawHead();
      drawReport();
      drawRoster();
      mountBoard();
    } else {
      drawStep(change.step_id);
      drawHead();
      if (change.step_id === selected) drawDetail();
      const step = model.steps.get(change.step_id);
      if (step && TERMINAL.has(step.status)) refreshUsage();
    }
    noteFirstStatus();
    followActive();
    drawFollow();
  }

  // For bench/web.py: the first paint that shows a step's status after a launch.
  function noteFirstStatus() {
    if (perf.marks.launchClick !== undefined && [...model.steps.values()].some((s) => s.status !== 'pending')) perf.markPainted('firstStepStatus');
  }

  function followActive() {
    if (!follow) return;
    const active = activeStep(model);
    if (active && active !== selected) select(active);
  }

  // -- actions ---------------------------------------------------------------------------------

  cancelBtn.addEventListener('click', () => {
    confirm.hidden = false;
    reason.focus();
  });
  confirm.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await post(`/api/runs/${encodeURIComponent(runId)}/cancel`, reason.value ? { reason: reason.value } : {});
      confirm.hidden = true;
      toast('Cancel requested.');
    } catch (err) {
      toast(describeError(err));
    }
  });

  copyBtn.addEventListener('click', async () => {
    if (!model.report) return;
    try {
      await copyText(model.report);
      toast('Report copied to the clipboard.');
    } catch (err) {
      toast(`The report could not be copied: ${describeError(err)}`);
    }
  });
  mdBtn.addEventListener('click', () => download(`/api/runs/${encodeURIComponent(runId)}/report`, 'text/markdown', `baton-${runId}.md`));
  logBtn.addEventListener('click', () => download(`/api/runs/${encodeURIComponent(runId)}/events?format=jsonl`, 'application/x-ndjson', `baton-${runId}-events.jsonl`));

  async function download(path, accept, filename) {
    try {
      const res = await request('GET', path, { accept, raw: true });
      const url = URL.createObjectURL(await res.blob());
      const a = h('a', { href: url, download: filename, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      toast(`The download failed: ${describeError(err)}`);
    }
  }

  // A task run (its steps are tasks) gets the task-graph dashboard above its roster.
  function mountBoard() {
    if (board || ![...model.steps.values()].some((s) => s.kind === 'task')) return;
    taskSection.hidden = false;
    board = mountTaskBoard(taskSection, { runId, labels: new Map([...model.steps.values()].map((s) => [s.step_id, s.label])) });
  }

  // -- lifecycle -------------------------------------------------------------------------------

  const onResize = () => placeDetail();
  narrow.addEventListener('change', onResize);

  get(`/api/runs/${encodeURIComponent(runId)}?min_position=${feed.start ?? 0}`).then((detailAnswer) => {
    if (!alive) return;
    model = fromSnapshot(detailAnswer);
    markJoined(model, feed.start ?? 0);
    drawHead();
    drawReport();
    drawRoster();
    mountBoard();
    // Frames the feed got before (or while) the snapshot was read, then the live ones.
    for (const frame of feed.recent((f) => f.run_id === runId)) apply(model, frame);
    stopFeed = feed.subscribe(onFrame);
    stopState = feed.onState((state) => {
      if (state === 'reconnecting') {
        markMissed(model);
        if (selected && model.steps.get(selected)?.status === 'running') drawDetail();
        showNotice('The live stream dropped: reconnecting… (missed steps and statuses are caught up on reconnect)', 'stream');
      } else if (state === 'live' && notice.dataset.kind === 'stream') {
        showNotice('Reconnected: caught up.', 'stream-ok');
        setTimeout(() => notice.dataset.kind === 'stream-ok' && hideNotice(), 3000);
      }
    });
    drawHead();
    drawReport();
    drawRoster();
    noteFirstStatus();
    followActive();
    if (!selected) drawDetail();
    drawFollow();
    if (!TERMINAL.has(model.run.status)) {
      ticker = setInterval(() => {
        const el = document.getElementById('elapsed');
        if (el && model) el.textContent = fmtDuration(elapsed());
      }, 1000);
    }
  }).catch((err) => {
    if (!alive) return;
    replace(main, h('h1', { tabindex: '-1', text: 'Run not found' }),
      h('p', { class: 'error', text: describeError(err) }), h('p', {}, h('a', { href: '#/runs', text: 'Back to the runs' })));
  });

  return () => {
    alive = false;
    if (board) board.destroy();
    stopFeed();
    stopState();
    clearInterval(ticker);
    clearTimeout(usageTimer);
    narrow.removeEventListener('change', onResize);
  };
}

/** Copy text: the Clipboard API where the page may use it, else a selected textarea and execCommand. */
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = h('textarea', { class: 'offscreen', readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  const ok = document.execCommand('copy');
  area.remove();
  if (!ok) throw new Error('the browser refused to copy');
}
