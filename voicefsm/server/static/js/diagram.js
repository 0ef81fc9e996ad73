// The flow's statechart as SVG, laid out in layers by BFS depth from the initial state.
// Edges between neighbouring layers are curves (down, or back up one layer); edges further back up
// (retries, loops) run in lanes at the sides; edges within a layer run straight or hop over.
// Transitions that leave (almost) every state for one target, such as hang-up handling, are not
// drawn as edges: they are listed once under the diagram, which keeps the picture readable.

import { classifyTransitions, layerStates } from "./flow-layout.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const NODE_H = 46;
const LAYER_GAP = 72;
const NODE_GAP = 28;
const LANE_GAP = 22;
const MARGIN = 16;
const CHAR_W = 7.4; // px per character at the node font size; good enough to size boxes
const LABEL_W = 6.2; // px per character of an edge label

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

/** An orthogonal polyline through `points` with rounded corners. */
function roundedPath(points, radius = 8) {
  let d = `M${points[0][0]},${points[0][1]}`;
  for (let i = 1; i < points.length - 1; i += 1) {
    const [px, py] = points[i - 1];
    const [x, y] = points[i];
    const [nx, ny] = points[i + 1];
    const r = Math.min(radius, Math.hypot(x - px, y - py) / 2, Math.hypot(nx - x, ny - y) / 2);
    const inX = x - Math.sign(x - px) * r;
    const inY = y - Math.sign(y - py) * r;
    const outX = x + Math.sign(nx - x) * r;
    const outY = y + Math.sign(ny - y) * r;
    d += ` L${inX},${inY} Q${x},${y} ${outX},${outY}`;
  }
  const last = points[points.length - 1];
  return `${d} L${last[0]},${last[1]}`;
}


const plural = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;

/** What `voicefsm validate` counts: written states; written (source, event, target) triples; the rest apart. */
export function countFlow(flow) {
  const added = new Set(flow.states.filter((s) => s.default).map((s) => s.id));
  const written = new Set();
  const defaults = new Set();
  for (const t of flow.transitions) {
    const isDefault = t.default ?? added.has(t.target);
    (isDefault ? defaults : written).add(`${t.source}\u0000${t.event}\u0000${t.target}`);
  }
  return {
    states: flow.states.length - added.size,
    transitions: written.size,
    defaultStates: added.size,
    defaultTransitions: defaults.size,
  };
}

/** Draw `flow` into `container`; returns a handle to highlight the call's progress. */
export function renderDiagram(container, flow) {
  const states = new Map(flow.states.map((s) => [s.id, s]));
  const { edges, global } = classifyTransitions(flow);
  const { depth, layers } = layerStates(flow, edges);

  const width = (id) => Math.max(96, Math.ceil(id.length * CHAR_W) + 28);
  const layerIndex = new Map();
  layers.forEach((layer) => layer.forEach((id, i) => layerIndex.set(id, i)));
  const adjacent = (a, b) => depth.get(a) === depth.get(b) && Math.abs(layerIndex.get(a) - layerIndex.get(b)) === 1;
  // Neighbours joined by an edge sit far enough apart for its label.
  const gapAfter = (layer, i) => {
    const joined = edges.filter(
      (e) => (e.source === layer[i] && e.target === layer[i + 1]) || (e.source === layer[i + 1] && e.target === layer[i]),
    );
    const label = Math.max(0, ...joined.map((e) => e.labels.join(", ").length));
    return joined.length ? Math.max(NODE_GAP, Math.ceil(label * LABEL_W) + 26) : NODE_GAP;
  };
  const layerWidths = layers.map((layer) =>
    layer.reduce((sum, id, i) => sum + width(id) + (i < layer.length - 1 ? gapAfter(layer, i) : 0), 0),
  );
  const inner = Math.max(160, ...layerWidths);

  const pos = new Map();
  layers.forEach((layer, d) => {
    let x = (inner - layerWidths[d]) / 2;
    layer.forEach((id, i) => {
      pos.set(id, { x, y: d * (NODE_H + LAYER_GAP), w: width(id), h: NODE_H });
      x += width(id) + (i < layer.length - 1 ? gapAfter(layer, i) : 0);
    });
  });
  // Edges that go back up the chart run in lanes on the left or right.
  const lanes = { left: 0, right: 0 };
  const routed = edges.map((e) => {
    let kind = "back";
    if (e.source === e.target) kind = "self";
    else if (depth.get(e.target) > depth.get(e.source)) kind = "down";
    else if (depth.get(e.source) - depth.get(e.target) === 1) kind = "up";
    else if (adjacent(e.source, e.target)) kind = "beside";
    else if (depth.get(e.target) === depth.get(e.source)) kind = "over";
    let side = null;
    let lane = 0;
    if (kind === "back") {
      const a = pos.get(e.source);
      const b = pos.get(e.target);
      const centre = (a.x + a.w / 2 + b.x + b.w / 2) / 2;
      side = centre < inner / 2 ? "left" : "right";
      lanes[side] += 1;
      lane = lanes[side];
    }
    return { ...e, kind, side, lane };
  });
  const longestLabel = Math.max(0, ...edges.map((e) => e.labels.join(", ").length));
  const sidePad = (n) => (n ? n * LANE_GAP + Math.min(200, longestLabel * LABEL_W) : 0);
  const leftPad = MARGIN + sidePad(lanes.left);
  const rightPad = MARGIN + Math.max(sidePad(lanes.right), 40); // room for self-loop labels
  for (const p of pos.values()) {
    p.x += leftPad;
    p.y += MARGIN;
  }
  const totalW = leftPad + inner + rightPad;
  const totalH = MARGIN * 2 + layers.length * NODE_H + Math.max(0, layers.length - 1) * LAYER_GAP;

  const svg = el("svg", {
    viewBox: `0 0 ${totalW} ${totalH}`,
    class: "diagram-svg",
    role: "img",
    "aria-labelledby": "diagram-title diagram-desc",
    preserveAspectRatio: "xMidYMin meet",
  });
  svg.style.maxWidth = `${totalW}px`;
  svg.style.minWidth = `${Math.round(Math.min(totalW, 640) * 0.8)}px`; // wide charts scroll rather than shrink
  svg.append(el("title", { id: "diagram-title" }, `Statechart of ${flow.name}`));
  svg.append(
    el(
      "desc",
      { id: "diagram-desc" },
      `${flow.states.length} states starting at ${flow.initial}. ` +
        routed.map((e) => `${e.source} to ${e.target} on ${e.labels.join(" or ")}`).join("; ") +
        ".",
    ),
  );
  const defs = el("defs");
  for (const [id, cls] of [["arrow", "arrow"], ["arrow-taken", "arrow taken"]]) {
    const marker = el("marker", {
      id: `vf-${id}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 8, markerHeight: 8,
      markerUnits: "userSpaceOnUse", orient: "auto-start-reverse",
    });
    marker.append(el("path", { d: "M0,0 L10,5 L0,10 z", class: cls }));
    defs.append(marker);
  }
  svg.append(defs);

  const edgeLayer = el("g", { class: "edges" });
  const nodeLayer = el("g", { class: "nodes" });
  svg.append(edgeLayer, nodeLayer);

  // Spread the edges meeting a node's top or bottom by the x of their other end (down before up on
  // ties, so a pair of opposite edges runs side by side without crossing).
  const ports = new Map();
  const atSide = (id, side) =>
    routed
      .filter((e) =>
        side === "bottom"
          ? (e.kind === "down" && e.source === id) || (e.kind === "up" && e.target === id)
          : (e.kind === "down" && e.target === id) || (e.kind === "up" && e.source === id),
      )
      .map((e) => ({ e, partner: e.source === id ? e.target : e.source }))
      .sort((a, b) => pos.get(a.partner).x - pos.get(b.partner).x || (a.e.kind === "down" ? -1 : 1))
      .map((item) => item.e);
  const port = (id, side, edge) => {
    const key = `${id}:${side}`;
    if (!ports.has(key)) ports.set(key, atSide(id, side));
    const list = ports.get(key);
    const p = pos.get(id);
    const slot = (list.indexOf(edge) + 1) / (list.length + 1);
    return { x: p.x + p.w * (0.2 + 0.6 * slot), y: side === "bottom" ? p.y + p.h : p.y };
  };
  const bezierAt = (s, c1, c2, t, u) => {
    const v = 1 - u;
    return [
      v * v * v * s[0] + 3 * v * v * u * c1[0] + 3 * v * u * u * c2[0] + u * u * u * t[0],
      v * v * v * s[1] + 3 * v * v * u * c1[1] + 3 * v * u * u * c2[1] + u * u * u * t[1],
    ];
  };

  const placed = []; // label boxes already drawn
  const labelBox = (x, y, text) => {
    const w = text.length * LABEL_W + 6;
    return { x, y, left: x - w / 2, right: x + w / 2, top: y - 10, bottom: y + 3 };
  };
  const overlaps = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const edgeElements = new Map();
  // Fanned-out edges first: they have the least room for their labels.
  routed.sort((a, b) => (a.kind === "down" || a.kind === "up" ? 0 : 1) - (b.kind === "down" || b.kind === "up" ? 0 : 1));
  for (const e of routed) {
    const a = pos.get(e.source);
    const b = pos.get(e.target);
    if (!a || !b) continue;
    let d;
    let lx;
    let ly;
    let anchor = "middle";
    if (e.kind === "down" || e.kind === "up") {
      const down = e.kind === "down";
      const s = port(e.source, down ? "bottom" : "top", e);
      const t = port(e.target, down ? "top" : "bottom", e);
      const dir = down ? 1 : -1;
      const bend = Math.max(24, Math.abs(t.y - s.y) / 2);
      const c1 = [s.x, s.y + dir * bend];
      const c2 = [t.x, t.y - dir * bend];
      d = `M${s.x},${s.y} C${c1} ${c2} ${t.x},${t.y - dir}`;
      // Labels of down edges start high in the gap, of up edges low, then slide along their curve
      // until they overlap no label placed before them.
      const first = down ? Math.min(0.4, (LAYER_GAP * 0.4) / Math.abs(t.y - s.y)) : 0.3;
      const text = e.labels.join(", ");
      const candidates = [first, 0.55, 0.7, 0.25, 0.82, 0.15].map((u) => {
        const [x, y] = bezierAt([s.x, s.y], c1, c2, [t.x, t.y], u);
        return labelBox(x, y + 4, text);
      });
      const box = candidates.find((c) => !placed.some((b) => overlaps(b, c))) || candidates[0];
      placed.push(box);
      [lx, ly] = [box.x, box.y];
    } else if (e.kind === "self") {
      const x = a.x + a.w;
      const y = a.y + a.h / 2;
      d = `M${x},${y - 10} C${x + 34},${y - 30} ${x + 34},${y + 30} ${x + 1},${y + 10}`;
      lx = x + 30;
      ly = y + 4;
      anchor = "start";
    } else if (e.kind === "beside") {
      const leftToRight = a.x < b.x;
      const y = a.y + a.h / 2;
      const sx = leftToRight ? a.x + a.w : a.x;
      const tx = leftToRight ? b.x - 1 : b.x + b.w + 1;
      d = `M${sx},${y} H${tx}`;
      lx = (sx + tx) / 2;
      ly = y - 6;
    } else if (e.kind === "over") {
      // Same layer, not neighbours: hop over the states between through the gap above them.
      const gap = a.y - 14;
      const sx = a.x + a.w * 0.7;
      const tx = b.x + b.w * 0.3;
      d = roundedPath([[sx, a.y], [sx, gap], [tx, gap], [tx, b.y - 1]]);
      lx = (sx + tx) / 2;
      ly = gap - 4;
    } else {
      // Back up the chart through a lane at the side. Leave and enter through the side when the
      // state is the outermost of its layer, else through the gap above it (so no state is crossed).
      const right = e.side === "right";
      const laneX = right ? leftPad + inner + e.lane * LANE_GAP : leftPad - e.lane * LANE_GAP;
      const outermost = (id) => {
        const layer = layers[depth.get(id)];
        return right ? layer[layer.length - 1] === id : layer[0] === id;
      };
      const jog = 10 + (e.lane % 3) * 4;
      const edgeX = (p) => (right ? p.x + p.w : p.x);
      const innerX = (p) => (right ? p.x + p.w * 0.8 : p.x + p.w * 0.2);
      const points = [];
      if (outermost(e.source)) points.push([edgeX(a), a.y + a.h / 2 + 6], [laneX, a.y + a.h / 2 + 6]);
      else points.push([innerX(a), a.y], [innerX(a), a.y - jog], [laneX, a.y - jog]);
      if (outermost(e.target)) points.push([laneX, b.y + b.h / 2 - 6], [edgeX(b) + (right ? 1 : -1), b.y + b.h / 2 - 6]);
      else points.push([laneX, b.y - jog - 6], [innerX(b) + (right ? 8 : -8), b.y - jog - 6], [innerX(b) + (right ? 8 : -8), b.y - 1]);
      d = roundedPath(points);
      const ys = points.map((pt) => pt[1]);
      lx = laneX + (right ? 5 : -5);
      ly = (Math.min(...ys.slice(1, -1)) + Math.max(...ys.slice(1, -1))) / 2 + 4;
      anchor = right ? "start" : "end";
    }
    const group = el("g", { class: "edge", "data-source": e.source, "data-target": e.target });
    group.append(el("path", { d, class: "edge-line", "marker-end": "url(#vf-arrow)" }));
    group.append(el("text", { x: lx, y: ly, class: "edge-label", "text-anchor": anchor }, e.labels.join(", ")));
    edgeLayer.append(group);
    edgeElements.set(`${e.source}\u0000${e.target}`, group);
  }

  const nodeElements = new Map();
  for (const [id, p] of pos) {
    const state = states.get(id);
    const classes = ["node", `kind-${state.kind || "state"}`];
    if (state.final) classes.push("final");
    if (state.default) classes.push("default");
    if (id === flow.initial) classes.push("initial");
    const group = el("g", { class: classes.join(" "), "data-state": id, transform: `translate(${p.x},${p.y})` });
    group.append(el("title", {}, state.prompt ? `${id} (${state.kind}): “${state.prompt}”` : `${id} (${state.kind})`));
    group.append(el("rect", { width: p.w, height: p.h, rx: 10, class: "node-box" }));
    if (state.final) group.append(el("rect", { x: 3, y: 3, width: p.w - 6, height: p.h - 6, rx: 8, class: "node-inner" }));
    group.append(el("text", { x: p.w / 2, y: 20, class: "node-name", "text-anchor": "middle" }, id));
    group.append(el("text", { x: p.w / 2, y: 36, class: "node-kind", "text-anchor": "middle" }, state.kind || ""));
    nodeLayer.append(group);
    nodeElements.set(id, group);
  }
  if (flow.initial && pos.has(flow.initial)) {
    const p = pos.get(flow.initial);
    nodeLayer.append(el("circle", { cx: p.x - 10, cy: p.y + p.h / 2, r: 5, class: "initial-dot" }));
  }

  const counted = countFlow(flow);
  const counts = document.createElement("p");
  counts.className = "diagram-counts";
  counts.textContent =
    `${plural(counted.states, "state")}, ${plural(counted.transitions, "transition")} as written ` +
    `(+${counted.defaultStates} states and ${counted.defaultTransitions} exits every flow gets, drawn dashed)`;
  counts.title = "Counted as `voicefsm validate` counts: a transition is one source, event and target.";
  container.replaceChildren(counts, svg);
  if (global.length) {
    const note = document.createElement("p");
    note.className = "diagram-note";
    const where = (g) => (g.everywhere ? "from any state" : `from ${g.sources.length} states`);
    note.textContent = "Not drawn: " + global.map((g) => `${g.event} → ${g.target} (${where(g)})`).join("; ") + ".";
    note.title = global.map((g) => `${g.event} → ${g.target} from ${g.sources.join(", ")}`).join("\n");
    container.append(note);
  }

  let current = null;
  return {
    svg,
    /** Highlight the state the call is in now (and mark it visited). */
    setCurrent(id) {
      if (current !== null && nodeElements.has(current)) nodeElements.get(current).classList.remove("current");
      current = id;
      const node = nodeElements.get(id);
      if (node) node.classList.add("current", "visited");
    },
    /** Mark a state as visited without making it current. */
    visit(id) {
      const node = nodeElements.get(id);
      if (node) node.classList.add("visited");
    },
    /** Mark the transition from `source` to `target` as taken. */
    takeEdge(source, target) {
      const edge = edgeElements.get(`${source}\u0000${target}`);
      if (edge) {
        edge.classList.add("taken");
        edge.querySelector("path").setAttribute("marker-end", "url(#vf-arrow-taken)");
      }
    },
    /** Forget the last call's progress. */
    reset() {
      current = null;
      for (const node of nodeElements.values()) node.classList.remove("current", "visited");
      for (const edge of edgeElements.values()) {
        edge.classList.remove("taken");
        edge.querySelector("path").setAttribute("marker-end", "url(#vf-arrow)");
      }
    },
  };
}
