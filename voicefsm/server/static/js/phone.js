// The browser plays Twilio's part of a Media Stream: connected, start, 20 ms media frames from the
// microphone (8 kHz mu-law), dtmf, stop; it plays the agent's media and answers mark and clear.

import { getStreamTicket } from "./api.js";
import { Player } from "./player.js";
import { SILENCE, encodeFloat, fromBase64, toBase64 } from "./mulaw.js";

const FRAME_SAMPLES = 160;
const STREAM_PATH = "/twilio/stream";

function sid(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/**
 * One phone that can place one call at a time. Listen for its events:
 * "status" (detail: {status, reason}), "mic" (detail: {status, error}), "speaking" (detail: bool).
 */
export class Phone extends EventTarget {
  /** @param {{rawMicrophone?: boolean, customParameters?: object}} options */
  constructor(options = {}) {
    super();
    this.rawMicrophone = Boolean(options.rawMicrophone);
    this.customParameters = options.customParameters || { caller: "browser" };
    this._reset();
  }

  _reset() {
    this.status = "idle"; // idle | connecting | in-call | ended
    this.endReason = null;
    this.callSid = null;
    this.callParameters = null;
    this.streamSid = null;
    this.accountSid = null;
    this.socket = null;
    this.context = null;
    this.player = null;
    this.micStream = null;
    this.micSource = null;
    this.tap = null;
    this.micStatus = "off"; // off | on | muted | unavailable
    this.micError = null;
    this.muted = false;
    this.sequence = 0;
    this.framesSent = 0;
    this.digitsSent = 0;
    this.marksEchoed = 0;
    this.mediaReceived = 0;
  }

  get connected() {
    return this.status === "in-call";
  }

  get audioPlayedSamples() {
    return this.player ? this.player.playedSamples : 0;
  }

  get audioReceivedSamples() {
    return this.player ? this.player.receivedSamples : 0;
  }

  get speaking() {
    return Boolean(this.player && this.player.speaking);
  }

  /** Place a call. Call this from a click handler so the browser lets audio start. */
  async call() {
    if (this.status === "connecting" || this.status === "in-call") return;
    this._reset();
    this._setStatus("connecting");
    this.accountSid = sid("AC");
    this.callSid = sid("CA");
    this.streamSid = sid("MZ");
    await this._openMicrophone();
    if (this.status !== "connecting") {
      this._releaseMicrophone(); // hung up while the browser asked for the microphone
      return;
    }
    this._openAudio();
    // resume() can stay pending when the browser blocks audio; the call goes on regardless.
    await Promise.race([this.context.resume(), new Promise((resolve) => setTimeout(resolve, 2000))]);
    if (this.status !== "connecting") return;
    await this.context.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url));
    if (this.status !== "connecting") return;
    this.tap = new AudioWorkletNode(this.context, "voicefsm-frame-tap", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      processorOptions: { frameSize: FRAME_SAMPLES },
    });
    // The tap must be pulled by the graph to run; a silent gain keeps the microphone out of the speakers.
    const sink = this.context.createGain();
    sink.gain.value = 0;
    this.tap.connect(sink).connect(this.context.destination);
    this.tap.port.onmessage = (event) => this._sendFrame(event.data);
    if (this.micSource) this.micSource.connect(this.tap);
    // A logged-in page gets a single-use ticket, as Twilio gets one from the voice webhook.
    const ticket = await getStreamTicket(this.callSid);
    if (this.status !== "connecting") return;
    this.callParameters = ticket ? { ...this.customParameters, token: ticket } : this.customParameters;
    this._openSocket();
  }

  async _openMicrophone() {
    const processing = !this.rawMicrophone;
    try {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        throw new Error("this browser offers no microphone here (it needs https or localhost)");
      }
      this.micStream = await navigator.mediaDevices.getUserMedia({
        audio: {
          channelCount: 1,
          echoCancellation: processing,
          noiseSuppression: processing,
          autoGainControl: processing,
        },
      });
    } catch (error) {
      this.micError = error && error.message ? error.message : String(error);
      this._setMic("unavailable");
    }
  }

  /** An AudioContext at a phone line's 8 kHz when the browser can feed the microphone into one. */
  _openAudio() {
    const makeContext = (options) => {
      try {
        return new AudioContext({ latencyHint: "interactive", ...options });
      } catch {
        return new AudioContext({ latencyHint: "interactive" });
      }
    };
    this.context = makeContext({ sampleRate: 8000 });
    if (this.micStream) {
      try {
        this.micSource = this.context.createMediaStreamSource(this.micStream);
      } catch {
        // Some browsers (Firefox) cannot mix a device's rate into an 8 kHz context: use the device
        // rate, and let the capture worklet downsample.
        this.context.close();
        this.context = makeContext({});
        this.micSource = this.context.createMediaStreamSource(this.micStream);
      }
      this._setMic(this.muted ? "muted" : "on");
    }
    this.player = new Player(this.context, (name) => this._echoMark(name));
    this.player.onIdle = () => this._emit("speaking", false);
  }

  _releaseMicrophone() {
    if (this.micStream) for (const track of this.micStream.getTracks()) track.stop();
    if (this.micSource) this.micSource.disconnect();
    this.micSource = null;
  }

  _openSocket() {
    const socket = new WebSocket(wsUrl(STREAM_PATH));
    this.socket = socket;
    socket.onopen = () => {
      this._send({ event: "connected", protocol: "Call", version: "1.0.0" });
      this._send({
        event: "start",
        sequenceNumber: this._nextSequence(),
        streamSid: this.streamSid,
        start: {
          accountSid: this.accountSid,
          streamSid: this.streamSid,
          callSid: this.callSid,
          tracks: ["inbound"],
          customParameters: this.callParameters || this.customParameters,
          mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 },
        },
      });
      this._setStatus("in-call");
    };
    socket.onmessage = (event) => this._receive(event.data);
    socket.onerror = () => {
      if (this.status === "connecting") this.endReason = "could not reach the server";
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      const reason = this.endReason || event.reason || (this.status === "connecting" ? "connection refused" : "ended");
      this._finish(reason);
    };
  }

  _nextSequence() {
    this.sequence += 1;
    return String(this.sequence);
  }

  _send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  _sendFrame(samples) {
    if (this.status !== "in-call") return;
    const payload = new Uint8Array(FRAME_SAMPLES);
    if (this.muted || !this.micSource) payload.fill(SILENCE);
    else encodeFloat(samples, payload);
    const chunk = this.framesSent + 1;
    const sent = this._send({
      event: "media",
      sequenceNumber: this._nextSequence(),
      streamSid: this.streamSid,
      media: { track: "inbound", chunk: String(chunk), timestamp: String(this.framesSent * 20), payload: toBase64(payload) },
    });
    if (sent) this.framesSent = chunk;
  }

  _receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return; // not ours to fix: ignore a frame we cannot read
    }
    if (!this.player) return;
    if (message.event === "media" && message.media && message.media.payload) {
      const wasSpeaking = this.player.speaking;
      this.player.enqueue(fromBase64(message.media.payload));
      this.mediaReceived += 1;
      if (!wasSpeaking) this._emit("speaking", true);
    } else if (message.event === "mark" && message.mark) {
      this.player.mark(message.mark.name);
    } else if (message.event === "clear") {
      this.player.clear();
    }
  }

  _echoMark(name) {
    if (this._send({ event: "mark", sequenceNumber: this._nextSequence(), streamSid: this.streamSid, mark: { name } })) {
      this.marksEchoed += 1;
    }
  }

  /** Send one keypad press (0-9, *, #) as a DTMF event. */
  sendDigit(digit) {
    if (!/^[0-9*#]$/.test(digit) || this.status !== "in-call") return false;
    const sent = this._send({
      event: "dtmf",
      sequenceNumber: this._nextSequence(),
      streamSid: this.streamSid,
      dtmf: { track: "inbound_track", digit },
    });
    if (sent) this.digitsSent += 1;
    return sent;
  }

  /** Mute sends silence instead of the microphone; the stream keeps flowing. */
  setMuted(muted) {
    this.muted = Boolean(muted);
    if (this.micSource) this._setMic(this.muted ? "muted" : "on");
  }

  /** Hang up: tell the server the stream stopped, then close. */
  hangUp() {
    if (this.status === "connecting" && !this.socket) {
      this._finish("cancelled");
      return;
    }
    if (this.status !== "in-call" && this.status !== "connecting") return;
    // Nothing may follow stop, not even the marks of audio we now drop.
    if (this.player) this.player.clear(false);
    this._send({
      event: "stop",
      sequenceNumber: this._nextSequence(),
      streamSid: this.streamSid,
      stop: { accountSid: this.accountSid, callSid: this.callSid },
    });
    this.endReason = "you hung up";
    this.socket.close(1000, "caller hung up");
  }

  _finish(reason) {
    if (this.status === "ended") return;
    this.endReason = reason;
    this._releaseMicrophone();
    if (this.tap) this.tap.port.onmessage = null;
    if (this.micStatus !== "unavailable") this._setMic("off");
    this._setStatus("ended", reason);
    // Let the agent's last words (a goodbye) finish before the audio context goes.
    const context = this.context;
    const closeAudio = () => {
      if (context && context.state !== "closed") context.close();
    };
    if (this.player && this.player.speaking) {
      this.player.onIdle = () => {
        this._emit("speaking", false);
        closeAudio();
      };
    } else closeAudio();
  }

  _setStatus(status, reason = null) {
    this.status = status;
    this._emit("status", { status, reason });
  }

  _setMic(status) {
    this.micStatus = status;
    this._emit("mic", { status, error: this.micError });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
