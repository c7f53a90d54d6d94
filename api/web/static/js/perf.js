// What bench/web.py reads from the page (window.batonConsole.perf).
//
// frame-to-paint: for each delta shown, the time from the frame's arrival
// (the EventSource event) to the first moment after the next paint (a task
// queued from requestAnimationFrame runs after that frame was painted).
// Recorded only with ?perf in the page's URL, so a normal page keeps nothing.

export const perf = {
  enabled: new URLSearchParams(location.search).has('perf'),
  paints: [],
  marks: {},
  pending: [],
  scheduled: false,

  /** A delta that arrived at ``received`` (performance.now()) is now in the DOM. */
  shown(received) {
    if (!this.enabled) return;
    this.pending.push(received);
    this._afterPaint();
  },

  /** Record ``name`` at the first moment after the next paint (once). */
  markPainted(name) {
    if (name in this.marks) return;
    this.marks[name] = null;
    requestAnimationFrame(() => setTimeout(() => { this.marks[name] = performance.now(); }, 0));
  },

  /** Record ``name`` now. */
  mark(name) {
    this.marks[name] = performance.now();
  },

  _afterPaint() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => setTimeout(() => {
      const now = performance.now();
      for (const t of this.pending) this.paints.push(now - t);
      this.pending = [];
      this.scheduled = false;
    }, 0));
  },
};
