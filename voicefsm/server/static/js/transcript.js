// Rendering of transcript turns (agent vs caller) and slot lists, shared by both pages.

import { clockTime, formatValue, h } from "./dom.js";

const SPEAKER = { agent: "Agent", caller: "Caller" };

/**
 * One turn as a list item. `details` adds timing lines (the history page).
 * @param {{speaker: string, text: string, at?: string, started_at?: string}} turn
 */
export function turnItem(turn, details = null) {
  const speaker = turn.speaker === "caller" ? "caller" : "agent";
  const at = turn.at || turn.started_at;
  return h(
    "li",
    { class: `turn turn-${speaker}` },
    h(
      "div",
      { class: "turn-head" },
      h("span", { class: "turn-speaker" }, SPEAKER[speaker]),
      at ? h("time", { datetime: at, class: "turn-time" }, clockTime(at)) : null,
    ),
    h("p", { class: "turn-text" }, turn.text || "…"),
    details ? h("p", { class: "turn-details" }, details) : null,
  );
}

/** Fill a <dl> with slot names and values; `declared` lists slots to show even when empty. */
export function renderSlots(dl, values, declared = []) {
  const names = [...declared.map((s) => s.name)];
  for (const name of Object.keys(values || {})) if (!names.includes(name)) names.push(name);
  const types = new Map(declared.map((s) => [s.name, s.type]));
  dl.replaceChildren();
  if (names.length === 0) {
    dl.append(h("div", { class: "slot empty" }, h("dt", {}, "No slots"), h("dd", {}, "")));
    return;
  }
  for (const name of names) {
    const filled = values && values[name] !== undefined && values[name] !== null;
    dl.append(
      h(
        "div",
        { class: filled ? "slot filled" : "slot", dataset: { slot: name } },
        h("dt", {}, name, types.get(name) ? h("span", { class: "slot-type" }, types.get(name)) : null),
        h("dd", {}, filled ? formatValue(values[name]) : "—"),
      ),
    );
  }
}
