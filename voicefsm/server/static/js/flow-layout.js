// Which transitions a statechart drawing shows, and the layers its states sit in: BFS depth from
// the initial state, ordered within a layer to sit under the states that lead to them.

// Hang-up and provider-failure handling, which the base flow adds to every state, is not the story.
const SYSTEM_EVENTS = new Set(["disconnected", "stt_error", "tts_error", "error", "hangup", "hung_up"]);

function edgeLabel(transition) {
  return transition.cond ? `${transition.event} [${transition.cond}]` : transition.event;
}

/** Split transitions into drawn edges (grouped per source→target) and "from any state" ones. */
export function classifyTransitions(flow) {
  const listening = flow.states.filter((s) => !s.final).length;
  const byEventTarget = new Map();
  for (const t of flow.transitions) {
    const key = `${t.event}\u0000${t.target}`;
    if (!byEventTarget.has(key)) byEventTarget.set(key, new Set());
    byEventTarget.get(key).add(t.source);
  }
  const global = [];
  const globalKeys = new Set();
  for (const [key, sources] of byEventTarget) {
    const [event, target] = key.split("\u0000");
    const widespread = sources.size >= 3 && sources.size >= 0.6 * listening;
    if (widespread || (SYSTEM_EVENTS.has(event) && sources.size >= 2)) {
      global.push({ event, target, sources: [...sources], everywhere: sources.size >= listening - 1 });
      globalKeys.add(key);
    }
  }
  const edges = new Map();
  for (const t of flow.transitions) {
    if (globalKeys.has(`${t.event}\u0000${t.target}`)) continue;
    const key = `${t.source}\u0000${t.target}`;
    if (!edges.has(key)) edges.set(key, { source: t.source, target: t.target, labels: [] });
    const label = edgeLabel(t);
    const edge = edges.get(key);
    if (!edge.labels.includes(label)) edge.labels.push(label);
  }
  return { edges: [...edges.values()], global };
}

/** Depth of every state by BFS over the drawn edges; unreachable states go one layer below the rest. */
export function layerStates(flow, edges) {
  const ids = flow.states.map((s) => s.id);
  const next = new Map(ids.map((id) => [id, []]));
  for (const e of edges) if (next.has(e.source) && next.has(e.target)) next.get(e.source).push(e.target);
  const depth = new Map();
  const initial = next.has(flow.initial) ? flow.initial : ids[0];
  const queue = initial === undefined ? [] : [initial];
  if (initial !== undefined) depth.set(initial, 0);
  while (queue.length) {
    const id = queue.shift();
    for (const target of next.get(id)) {
      if (!depth.has(target)) {
        depth.set(target, depth.get(id) + 1);
        queue.push(target);
      }
    }
  }
  const deepest = Math.max(-1, ...depth.values());
  for (const id of ids) if (!depth.has(id)) depth.set(id, deepest + 1);
  const layers = [];
  // BFS discovery order first, then declaration order for the rest.
  const order = [...depth.keys()];
  for (const id of order) {
    const d = depth.get(id);
    (layers[d] = layers[d] || []).push(id);
  }
  // One barycentre pass: put each state under the states that lead to it.
  for (let d = 1; d < layers.length; d += 1) {
    const above = new Map((layers[d - 1] || []).map((id, i) => [id, i]));
    const score = new Map();
    layers[d].forEach((id, i) => {
      const parents = edges.filter((e) => e.target === id && above.has(e.source)).map((e) => above.get(e.source));
      score.set(id, parents.length ? parents.reduce((a, b) => a + b, 0) / parents.length : i);
    });
    layers[d].sort((a, b) => score.get(a) - score.get(b));
  }
  return { depth, layers: layers.map((layer) => layer || []) };
}
