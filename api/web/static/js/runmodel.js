// A run as the run pane shows it: a snapshot (GET /api/runs/{id}) and the
// frames after it, folded. Applying a frame twice changes nothing: durable
// frames at or before the position already applied are skipped (frames of
// one event share its id, so they are told apart by type and step), and
// deltas only extend the text of the attempt that is running.

import { TERMINAL } from './dom.js';
import { frameKey } from './feed.js';

// Which step kinds take a message or an abort while they run (DESIGN §12's task steps).
export const STEP_CONTROLS = { task: ['message', 'abort'] };

function newStep(spec) {
  return {
    step_id: spec.step_id,
    label: spec.label || spec.step_id,
    kind: spec.kind || '',
    agent: spec.agent || spec.persona || '',
    deps: spec.deps || [],
    status: spec.status || 'pending',
    attempt: spec.attempt || 0,
    started_at: spec.started_at || null,
    ended_at: spec.ended_at || null,
    duration_s: spec.duration_s ?? null,
    error: spec.error || '',
    skip_reason: spec.skip_reason || spec.reason || '',
    detail: spec.detail || '',
    output: spec.output || '',
    prompt: spec.prompt || '',
    usage: spec.usage || {},
    model: spec.model || '',
    retry_at: spec.retry_at || null,
    last_position: spec.last_position || 0,
    decided_by: spec.decided_by || '',
    comment: spec.comment || '',
    kept_from: spec.kept_from || '', // a fork's step: its outcome is the parent run's, not run again
    child_run_id: spec.child_run_id || '', // a subflow step: the run it launched
    child_status: spec.child_status || '',
    item_count: spec.items || 0, // a map step: how many items its attempt goes over (0: unknown yet)
    items: null, // a map step: index -> {item, status, output, error}, once read or framed (null: neither yet)
    items_read: false, // a map step: its items were read from the run's detail (the frames alone name no pending item)
    approval: spec.status === 'paused' ? { prompt: spec.prompt || '' } : null,
    text: '', // the live text of the running attempt
    segments: [], // that text and its tool calls, in order: {text} | {call_id}
    missed: false, // the stream dropped while this attempt ran: some live text is missing
    tools: new Map(), // toolKey(role, call_id) -> {tool, arguments, role, ok, outcome, result, result_cut, error, bytes, result_position}
    anomalies: new Map(), // frame id -> anomaly frame
  };
}

// A call's key among its step's: a task's implementor and reviewer are two model conversations,
// each numbering its own calls (both may have a "call_1").
export function toolKey(role, callId) {
  return role ? `${role}:${callId}` : callId;
}

// The calls of the step's current attempt, as GET /api/runs/{id} lists them (no result text there:
// ``result_position`` names the ToolResult event that holds it, read from the audit log on demand).
function snapshotTools(step, calls) {
  for (const c of calls || []) {
    if (step.attempt && c.attempt && c.attempt !== step.attempt) continue;
    const key = toolKey(c.role, c.call_id);
    step.tools.set(key, {
      call_id: c.call_id, role: c.role || '', tool: c.tool, arguments: c.arguments, done: c.ok !== null && c.ok !== undefined,
      ok: c.ok, outcome: c.outcome || '', error: c.error || '', bytes: c.bytes || 0, truncated: !!c.truncated,
      result_position: c.result_position || 0,
    });
    step.segments.push({ call_id: key });
  }
}

/** The model of a run from its GET /api/runs/{id} answer. */
export function fromSnapshot(detail) {
  const run = { ...detail.run };
  const steps = new Map();
  for (const s of detail.steps || []) {
    const step = newStep(s);
    snapshotTools(step, s.tool_calls);
    for (const a of s.anomaly_records || []) step.anomalies.set(a.position, { ...a, id: a.position }); // as its frame's id
    if (Array.isArray(s.items) && s.status !== 'pending') takeItems(step, s.items); // as the snapshot saw them
    steps.set(s.step_id, step);
  }
  for (const child of detail.children || []) { // a subflow step's run (a fork or a retry names no step here)
    const step = child.parent_link === 'subflow' ? steps.get(child.forked_from) : null;
    if (step) Object.assign(step, { child_run_id: child.run_id, child_status: child.status });
  }
  return {
    run,
    steps,
    report: detail.report || null,
    lastId: run.last_position || 0,
    lastKeys: null, // null: every frame of lastId is already in the snapshot
  };
}

/** Whether the durable frame was applied already (and remember it when not). */
function seen(model, frame) {
  if (frame.id === undefined || frame.id === null) return false;
  const id = Number(frame.id);
  if (id < model.lastId) return true;
  const key = frameKey(frame);
  if (id === model.lastId) {
    if (model.lastKeys === null || model.lastKeys.has(key)) return true;
    model.lastKeys.add(key);
    return false;
  }
  model.lastId = id;
  model.lastKeys = new Set([key]);
  return false;
}

/**
 * Fold one frame into the model. Returns what changed, for the view to
 * redraw just that: {what: 'run'} | {what: 'step', step_id} | {what: 'delta', step_id, text}
 * | {what: 'tool', step_id, call_id} | null (nothing: another run, seen before, or unknown).
 */
export function apply(model, frame) {
  if (!frame || frame.run_id !== model.run.run_id) return null;
  if (seen(model, frame)) return null;
  switch (frame.type) {
    case 'flow_run_started': {
      for (const spec of frame.steps || []) if (!model.steps.has(spec.step_id)) model.steps.set(spec.step_id, newStep(spec));
      Object.assign(model.run, { flow: frame.flow_name || model.run.flow, band: frame.band || model.run.band });
      return { what: 'run' };
    }
    case 'run_forked': { // the copies of the parent's outcomes follow: those steps are not run again here
      for (const id of frame.copied_steps || []) {
        const step = model.steps.get(id);
        if (step) step.kept_from = frame.parent_run_id || '';
      }
      return { what: 'run' };
    }
    case 'flow_run_step_updated':
      return frame.step_id == null ? applyRun(model, frame) : applyStep(model, frame);
    case 'map_item': {
      const step = model.steps.get(frame.step_id);
      if (!step || frame.index === undefined) return null;
      if (frame.attempt && step.attempt && frame.attempt !== step.attempt) return null; // an older attempt's
      setItem(step, frame.index, { item: frame.item, status: frame.status, output: frame.output || '', error: frame.error || '' });
      return { what: 'step', step_id: step.step_id };
    }
    case 'approval_requested': {
      const step = model.steps.get(frame.step_id);
      if (!step) return null;
      step.approval = { prompt: frame.prompt || '' };
      step.prompt = frame.prompt || step.prompt;
      return { what: 'step', step_id: step.step_id };
    }
    case 'step_delta': {
      const step = model.steps.get(frame.step_id);
      if (!step || step.status !== 'running') return null;
      if (frame.attempt && step.attempt && frame.attempt !== step.attempt) return null;
      const text = frame.text || '';
      step.text += text;
      const last = step.segments[step.segments.length - 1];
      if (last && last.text !== undefined) last.text += text;
      else step.segments.push({ text });
      return { what: 'delta', step_id: step.step_id, text: frame.text || '' };
    }
    case 'anomaly': {
      const step = model.steps.get(frame.step_id);
      if (step) step.anomalies.set(frame.id, frame);
      model.run.anomalies = (model.run.anomalies || 0) + 1;
      return step ? { what: 'step', step_id: step.step_id } : { what: 'run' };
    }
    case 'tool_call':
    case 'tool_result': {
      const step = model.steps.get(frame.step_id);
      if (!step || !frame.call_id) return null;
      if (frame.attempt && step.attempt && frame.attempt !== step.attempt) return null; // an older attempt's
      const key = toolKey(frame.role, frame.call_id);
      let call = step.tools.get(key);
      if (!call) {
        call = { call_id: frame.call_id, role: frame.role || '', tool: frame.tool, arguments: frame.arguments };
        step.segments.push({ call_id: key });
      }
      if (frame.type === 'tool_call') Object.assign(call, { tool: frame.tool, arguments: frame.arguments });
      else {
        Object.assign(call, {
          done: true, ok: frame.ok, outcome: frame.outcome || '', result: frame.result ?? '', result_cut: !!frame.result_cut,
          error: frame.error || '', bytes: frame.bytes || 0, truncated: !!frame.truncated, tool: call.tool || frame.tool,
        });
        if (frame.id !== undefined && frame.id !== null) call.result_position = Number(frame.id);
      }
      step.tools.set(key, call);
      return { what: 'tool', step_id: step.step_id, call_id: key };
    }
    default:
      return null; // a frame type this console does not know: harmless
  }
}

function applyRun(model, frame) {
  const run = model.run;
  run.status = frame.run_status || frame.status || run.status;
  if (frame.reason !== undefined) run.reason = frame.reason;
  if (frame.status === 'queued') {
    run.queue_reason = frame.reason || '';
    run.plan_position = frame.plan_position || 0;
  }
  if (frame.status === 'running' && !run.started_at) run.started_at = frame.at;
  if (TERMINAL.has(run.status)) {
    run.ended_at = run.ended_at || frame.at;
    if (frame.by) run.ended_by = frame.by;
    if (frame.report) model.report = frame.report;
  }
  return { what: 'run' };
}

function applyStep(model, frame) {
  let step = model.steps.get(frame.step_id);
  if (!step) {
    step = newStep({ step_id: frame.step_id });
    model.steps.set(frame.step_id, step);
  }
  const attempt = frame.attempt || 0;
  if (frame.status === 'running') {
    if (attempt !== step.attempt || step.status !== 'running') {
      step.text = '';
      step.segments = [];
      step.missed = false;
      step.tools = new Map();
      if (step.items) step.items = step.items.map((it) => (it && it.status === 'failed' ? { ...it, status: 'pending', error: '' } : it));
    }
    Object.assign(step, { attempt: attempt || step.attempt, started_at: frame.at, ended_at: null, error: '' });
    if (frame.agent) step.agent = frame.agent;
    if (frame.model) step.model = frame.model;
    if (frame.items) step.item_count = frame.items;
    if (frame.child_run_id) Object.assign(step, { child_run_id: frame.child_run_id, child_status: 'running' });
  }
  step.status = frame.status;
  // a subflow step ends with its child: "completed" is the child's status too; any other end, the page
  // does not know which (failed, cancelled or rejected), so it says none rather than "running"
  if (step.child_run_id && TERMINAL.has(frame.status)) step.child_status = frame.status === 'completed' ? 'completed' : '';
  if (frame.status === 'completed' && frame.output !== undefined) step.output = frame.output;
  if (frame.duration_s !== undefined) step.duration_s = frame.duration_s;
  if (frame.error) step.error = frame.error;
  if (frame.status === 'skipped') {
    step.skip_reason = frame.reason || '';
    step.detail = frame.detail || '';
  }
  if (frame.decision) {
    step.decided_by = frame.by || '';
    step.comment = frame.comment || '';
    step.output = frame.comment || step.output;
  }
  if (frame.status !== 'paused') step.approval = null;
  if (frame.status !== 'running' && frame.status !== 'pending') step.ended_at = frame.at || step.ended_at;
  if (frame.will_retry) step.retry_at = frame.retry_at || 1;
  else if (frame.status === 'running' || TERMINAL.has(frame.status)) step.retry_at = null;
  if (frame.run_status) model.run.status = frame.run_status;
  else model.run.status = underWayStatus(model);
  return { what: 'step', step_id: step.step_id };
}

// Frames carry a run's status only when one event settles it; a pause does
// not (another step may still run), so it is worked out here, as
// flows.state.run_status does: paused when a person is awaited and nothing
// else can move (no attempt under way, no retry pending).
function underWayStatus(model) {
  const status = model.run.status;
  if (status !== 'running' && status !== 'paused') return status;
  let paused = false;
  for (const s of model.steps.values()) {
    if (s.status === 'running' || (s.status === 'pending' && s.retry_at)) return 'running';
    if (s.status === 'paused') paused = true;
  }
  return paused ? 'paused' : 'running';
}

function setItem(step, index, value) {
  if (!step.items) step.items = [];
  step.items[index] = { ...(step.items[index] || {}), ...value };
  if (step.items.length > step.item_count) step.item_count = step.items.length;
}

/**
 * A map step's items as GET /api/runs/{id} gives them (the server folds them from the run's events). The
 * frames that arrived meanwhile are kept: they are newer than that read, or the same.
 */
export function takeItems(step, items) {
  const framed = step.items || [];
  step.items = items.map((it) => ({ item: it.item, status: it.status, output: it.output || '', error: it.error || '' }));
  step.item_count = step.items.length;
  framed.forEach((value, i) => { if (value) setItem(step, i, value); });
  step.items_read = true;
}

/** A map step's counts: {total, completed, failed, running}; items not ended are running while the step is. */
export function itemCounts(step) {
  const items = step.items || [];
  const total = Math.max(step.item_count || 0, items.length);
  let completed = 0;
  let failed = 0;
  for (const it of items) {
    if (!it) continue;
    if (it.status === 'completed') completed += 1;
    else if (it.status === 'failed') failed += 1;
  }
  return { total, completed, failed, running: step.status === 'running' ? total - completed - failed : 0 };
}

/** The step a person most wants to watch: one waiting for them, else the running one started last. */
export function activeStep(model) {
  let running = null;
  for (const step of model.steps.values()) {
    if (step.status === 'paused') return step.step_id;
    if (step.status === 'running' && (!running || (step.started_at || 0) >= (running.started_at || 0))) running = step;
  }
  return running ? running.step_id : null;
}

/** A step's tokens from its usage ({total, prompt, completion}), or null when its backend reported none. */
export function stepTokens(usage) {
  const u = usage || {};
  const prompt = u.prompt_tokens || 0;
  const completion = u.completion_tokens || 0;
  const total = u.total_tokens || prompt + completion;
  return total ? { total, prompt, completion } : null;
}

/** Tokens used by the run so far (the steps' usage: {total, prompt, completion}), or null when no backend reported any. */
export function tokens(model) {
  const sum = { total: 0, prompt: 0, completion: 0 };
  let any = false;
  for (const step of model.steps.values()) {
    const n = stepTokens(step.usage);
    if (n) {
      sum.total += n.total;
      sum.prompt += n.prompt;
      sum.completion += n.completion;
      any = true;
    }
  }
  return any ? sum : null;
}

/**
 * Mark the text of steps that were already running before ``since`` (the
 * feed's start): their first deltas went out before this page listened.
 */
export function markJoined(model, since) {
  for (const step of model.steps.values()) {
    if (step.status === 'running' && step.last_position <= since && !step.segments.some((s) => s.text !== undefined || s.missed)) {
      step.segments.unshift({ missed: true, joined: true });
    }
  }
}

/** Mark the running steps' live text as incomplete (the stream dropped while they ran). */
export function markMissed(model) {
  for (const step of model.steps.values()) {
    const last = step.segments[step.segments.length - 1];
    if (step.status === 'running' && !(last && last.missed)) {
      step.missed = true;
      step.segments.push({ missed: true });
    }
  }
}
