// Gap-free playback of the agent's 8 kHz mu-law audio, and Twilio's mark semantics:
// a mark is echoed once all audio queued before it has played; `clear` drops everything
// queued and echoes every pending mark at once.

import { decodeToFloat } from "./mulaw.js";

const RATE = 8000;
const LEAD_S = 0.06; // scheduling headroom when playback (re)starts from an empty queue

export class Player {
  /**
   * @param {AudioContext} context
   * @param {(name: string) => void} onMark called when a mark is due back to the server
   */
  constructor(context, onMark) {
    this.context = context;
    this.onMark = onMark;
    this.output = context.createGain();
    this.output.connect(context.destination);
    this.queue = []; // {source, start, samples, marks, cleared}
    this.nextTime = 0;
    this.playedSamples = 0;
    this.receivedSamples = 0;
    this.onIdle = null; // called when the queue drains
  }

  /** True while agent audio is queued or playing. */
  get speaking() {
    return this.queue.length > 0;
  }

  /** Queue mu-law bytes right after whatever is already queued. */
  enqueue(bytes) {
    if (bytes.length === 0) return;
    const buffer = this.context.createBuffer(1, bytes.length, RATE);
    buffer.copyToChannel(decodeToFloat(bytes), 0);
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.output);
    const start = Math.max(this.nextTime, this.context.currentTime + LEAD_S);
    source.start(start);
    this.nextTime = start + buffer.duration;
    const entry = { source, start, samples: bytes.length, marks: [], cleared: false };
    source.onended = () => this._ended(entry);
    this.queue.push(entry);
    this.receivedSamples += bytes.length;
  }

  /** A mark from the server: echo it when the audio queued so far has played. */
  mark(name) {
    const last = this.queue[this.queue.length - 1];
    if (last) last.marks.push(name);
    else this.onMark(name);
  }

  /** Stop now, drop the queue, and echo every pending mark (unless `echo` is false: the call is over). */
  clear(echo = true) {
    const now = this.context.currentTime;
    const marks = [];
    for (const entry of this.queue) {
      entry.cleared = true;
      const played = Math.round((now - entry.start) * RATE);
      this.playedSamples += Math.max(0, Math.min(entry.samples, played));
      marks.push(...entry.marks);
      entry.marks = [];
      try {
        entry.source.stop();
      } catch {
        // never started: nothing to stop
      }
    }
    this.queue = [];
    this.nextTime = 0;
    if (echo) for (const name of marks) this.onMark(name);
    if (this.onIdle) this.onIdle();
  }

  _ended(entry) {
    if (entry.cleared) return;
    const index = this.queue.indexOf(entry);
    if (index >= 0) this.queue.splice(index, 1);
    this.playedSamples += entry.samples;
    for (const name of entry.marks) this.onMark(name);
    if (this.queue.length === 0 && this.onIdle) this.onIdle();
  }
}
