"""Draw a flow: Mermaid (python-statemachine's renderer), a Markdown transition table, or DOT,
with the current state highlighted; SVG and PNG through Graphviz's ``dot`` when it is installed.

Mermaid and DOT need nothing beyond voicefsm. ``defaults=False`` leaves out the exits every
flow gets (``hung_up``, ``failed`` and the transitions into them), which crowd a diagram.
"""

from __future__ import annotations

from typing import Literal

from statemachine.contrib.diagram import GraphvizNotFoundError, formatter
from statemachine.contrib.diagram.extract import extract
from statemachine.contrib.diagram.graphviz import run_graphviz
from statemachine.contrib.diagram.model import DiagramGraph, DiagramState
from statemachine.contrib.diagram.renderers.mermaid import MermaidRenderer

from voicefsm.flow.chart import VoiceFlow
from voicefsm.flow.checks import edges_of
from voicefsm.flow.errors import GraphUnavailableError
from voicefsm.flow.kinds import kind_for

GraphFormat = Literal["mermaid", "md", "dot", "svg", "png"]
FORMATS: tuple[GraphFormat, ...] = ("mermaid", "md", "dot", "svg", "png")
_GRAPHVIZ = "Graphviz's `dot` program (apt-get install graphviz, or brew install graphviz)"


def _flow_class(flow: type[VoiceFlow] | VoiceFlow) -> type[VoiceFlow]:
    return flow if isinstance(flow, type) else type(flow)


def _current(flow: type[VoiceFlow] | VoiceFlow, current: str | None) -> str | None:
    if current is not None:
        cls = _flow_class(flow)
        if current not in {state.id for state in cls.states}:
            known = ", ".join(state.id for state in cls.states)
            raise ValueError(f"{cls.__name__} has no state {current!r} to highlight; it has {known}")
        return current
    if isinstance(flow, VoiceFlow):
        return flow.current.id
    return None


def mermaid(flow: type[VoiceFlow] | VoiceFlow, *, current: str | None = None, defaults: bool = True) -> str:
    """Mermaid ``stateDiagram-v2`` source; ``current`` (or an instance's state) is highlighted."""
    cls = _flow_class(flow)
    graph = extract(cls)
    active = _current(flow, current)
    hidden = set() if defaults else set(cls._default_states)
    graph = DiagramGraph(
        name=graph.name,
        states=[_mark(state, active) for state in graph.states if state.id not in hidden],
        transitions=[t for t in graph.transitions if not (set(t.targets) & hidden)],
        compound_state_ids=graph.compound_state_ids,
        bidirectional_compound_ids=graph.bidirectional_compound_ids,
    )
    return MermaidRenderer().render(graph)


def _mark(state: DiagramState, active: str | None) -> DiagramState:
    state.is_active = state.id == active
    return state


def dot(flow: type[VoiceFlow] | VoiceFlow, *, current: str | None = None, defaults: bool = True) -> str:
    """Graphviz DOT source; states show their kind, the current one is filled."""
    cls = _flow_class(flow)
    active = _current(flow, current)
    hidden = set() if defaults else set(cls._default_states)
    lines = [
        f'digraph "{cls.__name__}" {{',
        '  rankdir=LR; node [shape=box, style=rounded, fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
        '  "__start" [shape=point, width=0.15];',
    ]
    for state in cls.states:
        if state.id in hidden:
            continue
        kind = kind_for(state)
        attrs = [f'label="{state.id}\\n«{kind.kind}»"']
        if kind.graph_shape:
            attrs.append(kind.graph_shape)
        if state.final:
            attrs.append("peripheries=2")
        if state.id == active:
            attrs.append('style="rounded,filled", fillcolor=turquoise, penwidth=2')
        if state.id in cls._default_states:
            attrs.append("color=gray50, fontcolor=gray40")
        lines.append(f'  "{state.id}" [{", ".join(attrs)}];')
    if cls.initial_state is not None:
        lines.append(f'  "__start" -> "{cls.initial_state.id}";')
    for edge in edges_of(cls):
        if edge.target is None or edge.target.id in hidden:
            continue
        label = " ".join(edge.events) + (f" [{' and '.join(edge.guards)}]" if edge.guards else "")
        style = ", color=gray50, fontcolor=gray40, style=dashed" if edge.default else ""
        lines.append(f'  "{edge.source.id}" -> "{edge.target.id}" [label="{label}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(
    flow: type[VoiceFlow] | VoiceFlow,
    fmt: GraphFormat = "mermaid",
    *,
    current: str | None = None,
    defaults: bool = True,
) -> str | bytes:
    """Draw ``flow`` as ``fmt``: text for mermaid/md/dot/svg, bytes for png.

    Raises GraphUnavailableError when svg/png is asked for and Graphviz is not installed.
    """
    if fmt == "mermaid":
        return mermaid(flow, current=current, defaults=defaults)
    if fmt == "md":
        return formatter.render(_flow_class(flow), "md")
    source = dot(flow, current=current, defaults=defaults)
    if fmt == "dot":
        return source
    if fmt not in ("svg", "png"):
        raise ValueError(f"unknown diagram format {fmt!r}; use one of {', '.join(FORMATS)}")
    try:
        output = run_graphviz(source, fmt)
    except GraphvizNotFoundError as exc:
        raise GraphUnavailableError(fmt, _GRAPHVIZ) from exc
    return output.decode("utf-8") if fmt == "svg" else output
