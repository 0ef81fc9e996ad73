// The browser phone page: wires the phone, the live view, the diagram and the controls together.
// Tests read window.voicefsmPhone (see the bottom of this file).

import { getFlow, sendCallerInput } from "./api.js";
import { duration, h } from "./dom.js";
import { renderDiagram } from "./diagram.js";
import { LiveView } from "./live.js";
import { Phone } from "./phone.js";
import { renderSlots, turnItem } from "./transcript.js";

const KEYS = [
  ["1", ""], ["2", "ABC"], ["3", "DEF"],
  ["4", "GHI"], ["5", "JKL"], ["6", "MNO"],
  ["7", "PQRS"], ["8", "TUV"], ["9", "WXYZ"],
  ["*", ""], ["0", "+"], ["#", ""],
];
const LIVE_GRACE_MS = 4000; // after the phone hangs up, how long to wait for the live view's "ended"

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const phone = new Phone({ rawMicrophone: params.get("mic") === "raw" });

const view = {
  flow: null,
  diagram: null,
  live: null,
  lastState: null,
  visited: [],
  transcript: [],
  slots: {},
  ended: null,
  liveConnected: false,
  liveMessages: 0,
  startedAt: 0,
  stateEnteredAt: 0, // performance.now() when lastState last changed
  idleSince: 0, // performance.now() when the agent's audio last finished playing
  clock: null,
  error: null,
};

// ---- flow and diagram -------------------------------------------------------------------------

async function loadFlow() {
  try {
    view.flow = await getFlow();
  } catch (error) {
    view.error = String(error.message || error);
    $("flow-name").textContent = "No flow available";
    $("flow-doc").textContent = `Could not load the flow (${view.error}). Is the server running a flow?`;
    return;
  }
  $("flow-name").textContent = view.flow.name;
  $("flow-doc").textContent = view.flow.doc || "";
  document.title = `${view.flow.name} · voicefsm phone`;
  view.diagram = renderDiagram($("diagram"), view.flow);
  renderSlots($("slots"), {}, view.flow.slots || []);
}

function enterState(state) {
  if (!state) return;
  if (view.lastState && view.lastState !== state && view.diagram) view.diagram.takeEdge(view.lastState, state);
  if (view.lastState !== state) view.stateEnteredAt = performance.now();
  view.lastState = state;
  if (!view.visited.includes(state)) view.visited.push(state);
  if (view.diagram) view.diagram.setCurrent(state);
  $("current-state").textContent = `· now in ${state}`;
}

// ---- transcript and slots ---------------------------------------------------------------------

function addTurn(turn) {
  view.transcript.push({ speaker: turn.speaker, text: turn.text, at: turn.at });
  const list = $("transcript");
  list.append(turnItem(turn));
  $("transcript-empty").hidden = true;
  list.lastElementChild.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function showSlots() {
  renderSlots($("slots"), view.slots, (view.flow && view.flow.slots) || []);
}

// ---- live view --------------------------------------------------------------------------------

function startLive(callSid) {
  view.live = new LiveView(callSid, {
    connection: (up) => {
      view.liveConnected = up;
    },
    snapshot: (message) => {
      view.liveMessages += 1;
      view.transcript = [];
      $("transcript").replaceChildren();
      for (const turn of message.transcript || []) addTurn(turn);
      // Optional history in the snapshot lets a reconnect re-mark the states already visited.
      for (const step of message.path || []) {
        if (view.diagram) {
          view.diagram.visit(step.source);
          view.diagram.takeEdge(step.source, step.target);
        }
        if (!view.visited.includes(step.source)) view.visited.push(step.source);
      }
      view.slots = { ...(message.slots || {}) };
      showSlots();
      enterState(message.state);
      enableTyping(true);
    },
    state: (message) => {
      view.liveMessages += 1;
      enterState(message.state);
    },
    turn: (message) => {
      view.liveMessages += 1;
      addTurn(message);
    },
    slot: (message) => {
      view.liveMessages += 1;
      view.slots[message.name] = message.value;
      showSlots();
      const row = document.querySelector(`[data-slot="${CSS.escape(message.name)}"]`);
      if (row) row.classList.add("just-filled");
    },
    ended: (message) => {
      view.liveMessages += 1;
      view.ended = message.reason || "ended";
      view.live.stop();
      showStatus();
    },
  }).start();
}

// ---- phone controls ---------------------------------------------------------------------------

function enableTyping(enabled) {
  for (const id of ["say-text", "say-send"]) $(id).disabled = !enabled;
}

function showStatus() {
  const status = $("call-status");
  status.dataset.status = phone.status;
  if (phone.status === "connecting") status.textContent = "Calling…";
  else if (phone.status === "in-call") {
    status.textContent = `In call · ${duration((Date.now() - view.startedAt) / 1000)}`;
  } else if (phone.status === "ended") {
    const why = view.ended || phone.endReason || "ended";
    status.textContent = `Call ended (${why.replaceAll("_", " ")})`;
  } else status.textContent = "Ready to call";
  $("call").disabled = phone.status === "connecting" || phone.status === "in-call";
  $("hangup").disabled = !(phone.status === "connecting" || phone.status === "in-call");
  $("mute").disabled = phone.status !== "in-call" || phone.micStatus === "unavailable";
  document.querySelectorAll(".key").forEach((key) => {
    key.disabled = phone.status !== "in-call";
  });
}

phone.addEventListener("status", (event) => {
  const { status } = event.detail;
  if (status === "in-call") {
    view.startedAt = Date.now();
    view.clock = setInterval(showStatus, 1000);
    startLive(phone.callSid);
  }
  if (status === "ended") {
    clearInterval(view.clock);
    enableTyping(false);
    const live = view.live;
    if (live && !live.ended) setTimeout(() => live.stop(), LIVE_GRACE_MS);
  }
  showStatus();
});

phone.addEventListener("mic", (event) => {
  const { status, error } = event.detail;
  const text = {
    on: "Microphone on: just speak.",
    muted: "Muted: the agent hears silence.",
    off: "The microphone is used once you call.",
    unavailable: `No microphone (${error || "not allowed"}): use the keypad or type instead.`,
  }[status];
  $("mic-status").textContent = text;
  $("mic-status").dataset.mic = status;
  const mute = $("mute");
  mute.setAttribute("aria-pressed", String(status === "muted"));
  mute.textContent = status === "muted" ? "Unmute" : "Mute";
  showStatus();
});

phone.addEventListener("speaking", (event) => {
  $("speaking").textContent = event.detail ? "Agent speaking…" : "";
  if (!event.detail) view.idleSince = performance.now();
});

async function placeCall() {
  view.lastState = null;
  view.visited = [];
  view.transcript = [];
  view.slots = {};
  view.ended = null;
  view.liveMessages = 0;
  view.stateEnteredAt = 0;
  view.idleSince = 0;
  if (view.live) view.live.stop();
  view.live = null;
  $("transcript").replaceChildren();
  $("transcript-empty").hidden = false;
  $("current-state").textContent = "";
  $("say-error").hidden = true;
  if (view.diagram) view.diagram.reset();
  showSlots();
  try {
    await phone.call();
  } catch (error) {
    view.error = String(error.message || error);
    $("call-status").textContent = `Could not start the call: ${view.error}`;
  }
}

function pressKey(digit) {
  if (!phone.sendDigit(digit)) return;
  const key = document.querySelector(`.key[data-digit="${CSS.escape(digit)}"]`);
  if (key) {
    key.classList.add("pressed");
    setTimeout(() => key.classList.remove("pressed"), 150);
  }
}

async function sayText(text) {
  const error = $("say-error");
  error.hidden = true;
  if (!text || !phone.callSid || phone.status !== "in-call") return false;
  try {
    await sendCallerInput(phone.callSid, { text });
    return true;
  } catch (failure) {
    error.textContent = `Not sent: ${failure.message || failure}`;
    error.hidden = false;
    return false;
  }
}

function buildKeypad() {
  const pad = $("keypad");
  for (const [digit, letters] of KEYS) {
    pad.append(
      h(
        "button",
        { type: "button", class: "key", disabled: true, dataset: { digit }, "aria-label": `Key ${digit}`, onclick: () => pressKey(digit) },
        h("span", { class: "key-digit" }, digit),
        h("span", { class: "key-letters", "aria-hidden": "true" }, letters),
      ),
    );
  }
}

$("call").addEventListener("click", placeCall);
$("hangup").addEventListener("click", () => phone.hangUp());
$("mute").addEventListener("click", () => phone.setMuted(!phone.muted));
$("say-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("say-text");
  const text = input.value.trim();
  if (await sayText(text)) input.value = "";
  input.focus();
});
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement) return;
  if (/^[0-9*#]$/.test(event.key) && phone.status === "in-call") {
    event.preventDefault();
    pressKey(event.key);
  }
});

buildKeypad();
showStatus();
const ready = loadFlow();

// ---- test hook --------------------------------------------------------------------------------

window.voicefsmPhone = {
  ready,
  get status() { return phone.status; },
  get connected() { return phone.connected; },
  get callSid() { return phone.callSid; },
  get streamSid() { return phone.streamSid; },
  get framesSent() { return phone.framesSent; },
  get digitsSent() { return phone.digitsSent; },
  get marksEchoed() { return phone.marksEchoed; },
  get mediaReceived() { return phone.mediaReceived; },
  get audioPlayedSamples() { return phone.audioPlayedSamples; },
  get audioReceivedSamples() { return phone.audioReceivedSamples; },
  get speaking() { return phone.speaking; },
  get micStatus() { return phone.micStatus; },
  get endReason() { return view.ended || phone.endReason; },
  get lastState() { return view.lastState; },
  get stateEnteredAt() { return view.stateEnteredAt; },
  get idleSince() { return view.idleSince; },
  get visited() { return [...view.visited]; },
  get transcript() { return view.transcript.map((t) => ({ ...t })); },
  get slots() { return { ...view.slots }; },
  get liveConnected() { return view.liveConnected; },
  get liveMessages() { return view.liveMessages; },
  get flow() { return view.flow; },
  get error() { return view.error; },
  call: placeCall,
  hangUp: () => phone.hangUp(),
  press: pressKey,
  say: sayText,
};
