"""``Echo``: a final state that sends every caller frame straight back (Asterisk's Echo()).

The caller's audio must reach the runtime, so a flow with an Echo state runs without speech
recognition (``uses_stt = False``).
"""

from __future__ import annotations

from typing import Any

from voicefsm.flow.kinds.base import ActivityHost
from voicefsm.flow.kinds.endings import Ending


class Echo(Ending):
    """Say ``prompt`` (optional), then send every caller frame straight back until hang-up or ``max_s``."""

    kind = "echo"
    needs_raw_audio = True

    def __init__(
        self,
        prompt: str | None = None,
        *,
        max_s: float = 600.0,
        outcome: str | None = None,
        name: str = "",
        enter: Any = None,
    ) -> None:
        super().__init__(prompt, outcome=outcome, name=name, enter=enter)
        self.max_s = max_s

    def argument_problems(self) -> list[tuple[str, str]]:
        if not self.max_s > 0:
            return [(f"has max_s={self.max_s!r}", "use a positive number of seconds, e.g. 600")]
        return []

    def flow_problems(self, flow: Any) -> list[tuple[str, str]]:
        if flow.uses_stt:
            return [
                (
                    "needs the caller's audio, but the flow sets uses_stt = True",
                    "remove `uses_stt = True`: a flow with an Echo state runs without speech recognition",
                )
            ]
        return []

    def spec_fields(self) -> dict[str, Any]:
        return {**super().spec_fields(), "max_s": self.max_s}

    async def act(self, host: ActivityHost) -> None:
        if host.line_open():
            await host.echo(self.max_s)
