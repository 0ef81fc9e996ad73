// The call-history page: a list of past calls and, for the chosen one, its full record.
// The chosen call lives in the URL hash (/calls#CA...), so a call can be linked to.

import { getCall, getFlow, listCalls } from "./api.js";
import { dateTime, duration, formatValue, h, secondsBetween } from "./dom.js";
import { renderDiagram } from "./diagram.js";
import { renderSlots, turnItem } from "./transcript.js";

const $ = (id) => document.getElementById(id);
let flow = null;
let calls = [];

function outcomeBadge(outcome) {
  const text = outcome || "in progress";
  return h("span", { class: `outcome outcome-${String(text).replace(/[^a-z0-9_-]/gi, "")}` }, text.replaceAll("_", " "));
}

async function loadList() {
  const status = $("calls-status");
  status.textContent = "Loading…";
  try {
    calls = await listCalls(50);
  } catch (error) {
    status.textContent = `Could not load the calls: ${error.message || error}`;
    return;
  }
  const body = $("calls-body");
  body.replaceChildren();
  if (!calls.length) {
    status.textContent = "No calls yet. Place one from the phone page.";
    $("calls-table").hidden = true;
    return;
  }
  status.textContent = `${calls.length} call${calls.length === 1 ? "" : "s"}, newest first.`;
  for (const call of calls) {
    const length = secondsBetween(call.started_at, call.ended_at);
    const row = h(
      "tr",
      { dataset: { callSid: call.call_sid }, onclick: () => select(call.call_sid) },
      h("td", {}, h("a", { href: `#${call.call_sid}`, title: call.call_sid }, dateTime(call.started_at))),
      h("td", {}, call.caller || "—"),
      h("td", {}, length === null ? "—" : duration(length)),
      h("td", {}, outcomeBadge(call.outcome)),
      h("td", {}, call.final_state || "—"),
    );
    body.append(row);
  }
  $("calls-table").hidden = false;
  markSelected(location.hash.slice(1));
}

function markSelected(callSid) {
  for (const row of document.querySelectorAll("#calls-body tr")) {
    row.setAttribute("aria-selected", String(row.dataset.callSid === callSid));
  }
}

function select(callSid) {
  if (location.hash.slice(1) !== callSid) location.hash = callSid;
  else showCall(callSid);
}

function offset(startIso, iso) {
  const s = secondsBetween(startIso, iso);
  return s === null ? "" : `+${s.toFixed(1)} s`;
}

function turnDetails(call, turn) {
  const parts = [];
  const at = offset(call.started_at, turn.started_at);
  if (at) parts.push(at);
  const length = secondsBetween(turn.started_at, turn.ended_at);
  if (length !== null) parts.push(`${length.toFixed(1)} s long`);
  if (turn.latency_ms !== null && turn.latency_ms !== undefined) parts.push(`reply in ${Math.round(turn.latency_ms)} ms`);
  if (turn.via) parts.push(`via ${turn.via}`);
  return parts.join(" · ");
}

// A caller turn's wait for its answer, as a small timeline: one bar segment per stage, to scale.
const STAGES = [
  ["commit_ms", "commit", "speech end → transcript"],
  ["parse_ms", "parse", "→ parsed"],
  ["transition_ms", "transition", "→ transition done"],
  ["first_audio_ms", "first-audio", "→ first audio sent"],
];
const SOURCES = { memory: "prompt cache (memory)", disk: "prompt cache (disk)", provider: "speech service" };

function latencyTimeline(breakdown) {
  const total = breakdown.total_ms;
  const scale = Math.max(total || 0, ...STAGES.map(([key]) => breakdown[key] || 0), 1);
  const bar = h("div", { class: "latency-bar", "aria-hidden": "true" });
  const steps = [];
  for (const [key, name, label] of STAGES) {
    const ms = breakdown[key];
    if (ms === null || ms === undefined) continue;
    const segment = h("span", { class: `latency-seg latency-${name}`, title: `${label}: ${ms} ms` });
    segment.style.flexGrow = String(Math.max(ms / scale, 0.004)); // CSSOM: allowed by a strict CSP
    bar.append(segment);
    steps.push(h("li", { class: `latency-step latency-step-${name}` }, `${label} ${ms} ms`));
  }
  const tts = [];
  if (breakdown.tts_source) tts.push(`audio from the ${SOURCES[breakdown.tts_source] || breakdown.tts_source}`);
  if (breakdown.tts_first_byte_ms !== null && breakdown.tts_first_byte_ms !== undefined) {
    tts.push(`first byte after ${breakdown.tts_first_byte_ms} ms`);
  }
  if (breakdown.prefetched) tts.push("synthesized ahead");
  const heading = total === null || total === undefined ? "not answered" : `answered in ${total} ms`;
  return h(
    "figure",
    { class: "latency", dataset: { totalMs: total === null || total === undefined ? "" : String(total) } },
    bar,
    h(
      "figcaption",
      {},
      h("strong", {}, heading),
      h("ol", { class: "latency-steps" }, ...steps),
      tts.length ? h("span", { class: "latency-tts" }, tts.join(" · ")) : null,
    ),
  );
}

function transcriptItem(call, turn) {
  const item = turnItem(turn, turnDetails(call, turn));
  if (turn.breakdown) item.append(latencyTimeline(turn.breakdown));
  return item;
}

function errorText(error) {
  if (typeof error === "string") return error;
  if (error && typeof error === "object") {
    const what = error.message || error.detail || error.reason || JSON.stringify(error);
    const where = [error.at && dateTime(error.at), error.kind || error.type || error.provider].filter(Boolean).join(" ");
    return where ? `${where}: ${what}` : what;
  }
  return formatValue(error);
}

async function showCall(callSid) {
  markSelected(callSid);
  const status = $("detail-status");
  if (!callSid) {
    $("detail-title").textContent = "Choose a call";
    $("detail-body").hidden = true;
    status.hidden = false;
    return;
  }
  $("detail-title").textContent = `Call ${callSid}`;
  status.textContent = "Loading…";
  status.hidden = false;
  let call;
  try {
    call = await getCall(callSid);
  } catch (error) {
    status.textContent = error.status === 404 ? "No such call." : `Could not load the call: ${error.message || error}`;
    $("detail-body").hidden = true;
    return;
  }
  status.hidden = true;
  const length = secondsBetween(call.started_at, call.ended_at);
  const meta = [
    ["Flow", call.flow],
    ["Caller", call.caller || "—"],
    ["Started", dateTime(call.started_at)],
    ["Length", length === null ? "in progress" : duration(length)],
    ["Outcome", outcomeBadge(call.outcome)],
    ["Last state", call.final_state || "—"],
  ];
  $("detail-meta").replaceChildren(...meta.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));

  const recording = $("recording");
  recording.replaceChildren(
    call.recording_url
      ? h("audio", { controls: true, preload: "metadata", src: call.recording_url, "aria-label": "Call recording" })
      : h("p", { class: "muted" }, "No recording for this call."),
  );
  if (call.recording_url) {
    recording.append(h("a", { href: call.recording_url, download: `${call.call_sid}.wav` }, "Download WAV"));
  }

  const transcript = $("detail-transcript");
  transcript.replaceChildren(...(call.transcript || []).map((turn) => transcriptItem(call, turn)));
  if (!transcript.children.length) transcript.append(h("li", { class: "muted" }, "Nothing was said."));

  const path = $("detail-path");
  path.replaceChildren(
    ...(call.path || []).map((step) =>
      h(
        "li",
        {},
        step.source, " ", h("span", { class: "event" }, `—${step.event}→`), " ", step.target,
        h("span", { class: "at" }, offset(call.started_at, step.at)),
      ),
    ),
  );
  if (!path.children.length) path.append(h("li", { class: "muted" }, "No transitions recorded."));

  renderSlots($("detail-slots"), call.slots || {}, flow && flow.name === call.flow ? flow.slots || [] : []);
  const errors = $("detail-errors");
  errors.replaceChildren(...(call.errors || []).map((e) => h("li", {}, errorText(e))));
  if (!errors.children.length) errors.append(h("li", { class: "muted" }, "None."));

  const diagramBox = $("detail-diagram");
  if (flow && flow.name === call.flow) {
    const diagram = renderDiagram(diagramBox, flow);
    for (const step of call.path || []) {
      diagram.visit(step.source);
      diagram.takeEdge(step.source, step.target);
    }
    const last = call.final_state || (call.path && call.path.length ? call.path[call.path.length - 1].target : flow.initial);
    diagram.setCurrent(last);
  } else {
    diagramBox.replaceChildren(h("p", { class: "muted" }, "The flow of this call is not the one being served."));
  }
  $("detail-body").hidden = false;
}

$("refresh").addEventListener("click", async () => {
  await loadList();
  await showCall(location.hash.slice(1));
});
window.addEventListener("hashchange", () => showCall(location.hash.slice(1)));

const ready = (async () => {
  try {
    flow = await getFlow();
  } catch {
    flow = null; // the history still works without the diagram
  }
  await loadList();
  if (location.hash.length > 1) await showCall(location.hash.slice(1));
})();

window.voicefsmHistory = {
  ready,
  get calls() { return calls.map((c) => ({ ...c })); },
};
