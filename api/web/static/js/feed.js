// The console's one live stream: an EventSource on /api/stream, shared by
// every view.
//
// It starts after a known position (the store's head when the console
// loaded), so a view that reads a snapshot with ?min_position=<start> and
// then applies the frames after the snapshot's own position misses nothing.
// It resumes after a drop: the browser reconnects by itself sending
// Last-Event-ID; when it gives up (the server answered an error, or was gone
// too long) the feed opens a new EventSource with ?after=<last id>. Durable
// frames seen twice (frames of one event share its id) are dropped here, and
// every handler is idempotent as well. Recent frames are kept in a ring, so
// a run pane opened just after a launch still gets the first deltas.

import { get } from './api.js';

export const FRAME_TYPES = [
  'flow_run_started', 'flow_run_step_updated', 'approval_requested', 'step_delta', 'anomaly',
  'plan_updated', 'plan_delta', 'tool_call', 'tool_result', 'task_updated', 'message', 'map_item', 'run_forked',
];
const RING = 5000;
const MAX_BACKOFF_MS = 5000;

/** The key that tells apart the frames of one event (they share its id). */
export function frameKey(frame) {
  return `${frame.type}:${frame.step_id ?? ''}:${frame.call_id ?? ''}`;
}

export class Feed {
  constructor() {
    this.listeners = new Set();
    this.stateListeners = new Set();
    this.ring = [];
    this.start = null; // the position this feed started after
    this.lastId = null; // the last durable frame's id
    this.lastKeys = new Set(); // keys of the frames seen with lastId
    this.state = 'connecting';
    this.source = null;
    this.retryTimer = 0;
    this.backoff = 500;
    this.drops = 0;
    this.paused = false;
  }

  /** Open the stream after ``after`` (a position). */
  open(after) {
    this.start = after;
    this.lastId = after;
    this._connect();
  }

  _url() {
    return `/api/stream?after=${encodeURIComponent(this.lastId ?? this.start ?? 0)}`;
  }

  _connect() {
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    const source = new EventSource(this._url());
    this.source = source;
    for (const type of FRAME_TYPES) source.addEventListener(type, (e) => this._receive(e));
    source.addEventListener('open', () => {
      this.backoff = 500;
      this._setState('live');
    });
    source.addEventListener('error', () => {
      if (source !== this.source) return;
      this._setState('reconnecting');
      if (source.readyState === EventSource.CLOSED) this._retry();
    });
  }

  _retry() {
    // The browser gave up: open again after our own last id, then check the
    // session (a 401 shows the login view through request()).
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(async () => {
      if (this.paused) return;
      try {
        await get('/api/runs?limit=1');
      } catch {
        // still down: keep trying, slower
      }
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
      this._connect();
    }, this.backoff);
  }

  _setState(state) {
    if (state === this.state) return;
    if (state === 'reconnecting') this.drops += 1;
    this.state = state;
    for (const fn of this.stateListeners) fn(state);
  }

  _receive(event) {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return; // not JSON: nothing a view could use
    }
    if (!frame || typeof frame !== 'object') return;
    frame.type = frame.type || event.type;
    frame.received = performance.now();
    if (frame.id !== undefined && frame.id !== null) {
      const id = Number(frame.id);
      const key = frameKey(frame);
      if (this.lastId !== null && id < this.lastId) return;
      if (id === this.lastId) {
        if (this.lastKeys.has(key)) return;
      } else {
        this.lastId = id;
        this.lastKeys = new Set();
      }
      this.lastKeys.add(key);
    }
    this.ring.push(frame);
    if (this.ring.length > RING) this.ring.splice(0, this.ring.length - RING);
    for (const fn of this.listeners) {
      try {
        fn(frame);
      } catch (err) {
        console.error('a frame handler failed', frame.type, err);
      }
    }
  }

  /** Call fn(frame) for each new frame; returns the function that stops it. */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Call fn(state) when the connection state changes ('live', 'reconnecting'). */
  onState(fn) {
    this.stateListeners.add(fn);
    return () => this.stateListeners.delete(fn);
  }

  /** The frames kept in the ring that satisfy ``pick``, oldest first. */
  recent(pick) {
    return this.ring.filter(pick);
  }

  /** Close the connection (a test hook and the bench use it to drop the stream on purpose). */
  pause() {
    this.paused = true;
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    this.source = null;
    this._setState('reconnecting');
  }

  /** Reconnect after a pause, resuming after the last id seen. */
  resume() {
    this.paused = false;
    this._connect();
  }
}

export const feed = new Feed();
