"""What the flow runtime does for the state the chart is in, and the tasks that work owns.

A :class:`StateActivity` lives from the chart entering a state until it leaves it: it holds
the state's prompt task and its one timer (no-input or inter-digit), posts their results to
the runtime's mailbox tagged with a token, and :meth:`~StateActivity.stop` cancels and awaits
everything. A message whose token is no longer current (a prompt cut off by barge-in, a timer
pushed back) is dropped by :meth:`~StateActivity.claim`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from statemachine import State

from voicefsm.flow.errors import FlowError
from voicefsm.runtime.call import SpeakResult
from voicefsm.runtime.clock import Clock
from voicefsm.runtime.flow_endings import cancel_and_wait

Phase = Literal["idle", "prompting", "listening"]


class FlowStuckError(FlowError):
    """The chart took no transition on an event its state was waiting for, so the call could not go on."""

    def __init__(self, flow: str, state: str, event: str) -> None:
        super().__init__(flow, state, event)
        self.flow, self.state, self.event = flow, state, event

    def __str__(self) -> str:
        return f"{self.flow}.{self.state} took no transition on {self.event}, so the call could not go on"


@dataclass(frozen=True, slots=True)
class PromptEnded:
    """A prompt task finished (played, interrupted by the line, failed, or the call ended)."""

    token: int
    result: SpeakResult


@dataclass(frozen=True, slots=True)
class TimerFired:
    """The state's timer ran out."""

    token: int
    kind: str


class StateActivity:
    """The runtime's work for one state: a prompt, a timer, retry counts and collected keys."""

    def __init__(
        self,
        state: State,
        clock: Clock,
        post: Callable[[PromptEnded | TimerFired], None],
        tokens: itertools.count[int],
    ) -> None:
        self.state = state
        self.phase: Phase = "idle"
        self.failures: dict[str, int] = {}
        self.digits = ""
        self.keys_started: float | None = None
        self._clock = clock
        self._post = post
        self._tokens = tokens
        self._prompt: asyncio.Task[None] | None = None
        self._prompt_token: int | None = None
        self._timer: asyncio.Task[None] | None = None
        self._timer_token: int | None = None
        self._timer_kind = ""
        self._deadline = 0.0
        self._retired: list[asyncio.Task[None]] = []

    def start_prompt(self, speak: Callable[[int], Coroutine[Any, Any, None]]) -> None:
        """Run ``speak(token)`` as this state's prompt task; it posts PromptEnded(token, ...)."""
        token = next(self._tokens)
        self.phase, self._prompt_token = "prompting", token
        self._prompt = asyncio.create_task(speak(token), name=f"flow-prompt-{self.state.id}")

    async def cancel_prompt(self) -> None:
        """Stop the prompt now (the call clears the caller's buffer) and wait until it has stopped."""
        task, self._prompt, self._prompt_token = self._prompt, None, None
        await cancel_and_wait(task)

    def arm(self, kind: str, seconds: float) -> None:
        """Start the state's timer, or push it back: re-arming the same kind only moves its deadline."""
        self._deadline = self._clock.now() + seconds
        if self._timer is not None and self._timer_kind == kind and not self._timer.done():
            return
        self.disarm()
        token = next(self._tokens)
        self._timer_kind, self._timer_token = kind, token
        self._timer = asyncio.create_task(self._run_timer(token, kind), name=f"flow-{kind}-timer")

    def disarm(self) -> None:
        """Stop the timer (cancelled now, awaited by :meth:`stop`; a late message is dropped)."""
        if self._timer is not None:
            self._timer.cancel()
            self._retired = [task for task in self._retired if not task.done()] + [self._timer]
        self._timer, self._timer_token = None, None

    async def _run_timer(self, token: int, kind: str) -> None:
        while (remaining := self._deadline - self._clock.now()) > 0:
            await self._clock.sleep(remaining)
        self._post(TimerFired(token, kind))

    def claim(self, message: PromptEnded | TimerFired) -> bool:
        """True (once) when ``message`` comes from this state's current prompt or timer."""
        if isinstance(message, PromptEnded) and message.token == self._prompt_token:
            self._prompt, self._prompt_token = None, None
            return True
        if isinstance(message, TimerFired) and message.token == self._timer_token:
            self._timer, self._timer_token = None, None
            return True
        return False

    async def stop(self) -> None:
        """Cancel and await every task of this state."""
        tasks = [self._prompt, self._timer, *self._retired]
        self._prompt = self._timer = None
        self._prompt_token = self._timer_token = None
        self._retired = []
        self.phase = "idle"
        await cancel_and_wait(*tasks)
