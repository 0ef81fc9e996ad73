// The live view of one call: a WebSocket to /api/calls/{callSid}/events that delivers a snapshot,
// then state, turn, slot and ended messages. The call may not be known to the server for a moment
// after the media stream starts, so the connection retries (briefly) until the call has ended.

const RETRY_MS = [100, 200, 400, 800, 1000];

export class LiveView {
  /**
   * @param {string} callSid
   * @param {{snapshot?: Function, state?: Function, turn?: Function, slot?: Function, ended?: Function,
   *          connection?: Function}} handlers one per message type, plus connection(bool)
   */
  constructor(callSid, handlers) {
    this.callSid = callSid;
    this.handlers = handlers;
    this.socket = null;
    this.ended = false;
    this.stopped = false;
    this.attempt = 0;
    this.timer = null;
    this.messages = 0;
  }

  start() {
    this.stopped = false;
    this._connect();
    return this;
  }

  /** Stop listening (no more retries). */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
  }

  _connect() {
    if (this.stopped || this.ended) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const path = `/api/calls/${encodeURIComponent(this.callSid)}/events`;
    const socket = new WebSocket(`${scheme}//${location.host}${path}`);
    this.socket = socket;
    socket.onopen = () => this._call("connection", true);
    socket.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.messages += 1;
      this.attempt = 0;
      if (message.type === "ended") this.ended = true;
      this._call(message.type, message);
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this._call("connection", false);
      if (this.stopped || this.ended) return;
      const delay = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
      this.attempt += 1;
      this.timer = setTimeout(() => this._connect(), delay);
    };
  }

  _call(type, message) {
    const handler = this.handlers[type];
    if (handler) handler(message);
  }
}
