"""User-written sync flow code (guards, actions, hooks) runs off the event loop: a slow one delays only
its own call, is named for the watchdog, and fails the test kit's call quickly."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import ClassVar

from voicefsm.flow import Ask, Hangup, Say, VoiceFlow, YesNo
from voicefsm.providers.scripted import ScriptedTextToSpeech
from voicefsm.runtime.call import Call
from voicefsm.runtime.flow_runtime import FlowListener, FlowRuntime
from voicefsm.runtime.watchdog import current_callback
from voicefsm.testing.line import FlowLine


class Hooks(VoiceFlow):
    greet = Say("Hello.", initial=True)
    confirm = Ask("Shall I?", expect=YesNo())
    yes_ = Hangup("Done.")
    no_ = Hangup("Fine.")
    spoken = greet.to(confirm, on="remember")
    filled = confirm.to(yes_, cond="yes") | confirm.to(no_, cond="not grumpy") | confirm.to(no_)
    no_input = confirm.to(no_)
    no_match = confirm.to(no_)

    seen: ClassVar[list[tuple[str, str, str | None]]] = []

    def remember(self) -> None:
        type(self).seen.append(("remember", threading.current_thread().name, current_callback.get()))

    def on_enter_confirm(self) -> None:
        type(self).seen.append(("on_enter_confirm", threading.current_thread().name, current_callback.get()))

    def grumpy(self) -> bool:
        type(self).seen.append(("grumpy", threading.current_thread().name, current_callback.get()))
        return False


async def test_user_callbacks_run_on_the_step_pool_in_order_named_and_builtins_stay_inline() -> None:
    Hooks.seen.clear()
    async with FlowLine(Hooks) as line:
        await line.answer("yes")
        await line.ended()
    line.assert_path("greet", "confirm", "yes_")
    names = [name for name, _, _ in Hooks.seen]
    assert names == ["remember", "on_enter_confirm"]  # `yes` (built in) decided: `grumpy` never ran
    assert all(thread.startswith("voicefsm-step") for _, thread, _ in Hooks.seen)
    assert Hooks.seen[0][2] is not None and Hooks.seen[0][2].startswith("Hooks.")
    assert "remember (" in Hooks.seen[0][2] and "test_flow_code_off_loop.py:" in Hooks.seen[0][2]


class Errors(FlowListener):
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def on_error(self, kind: str, message: str, error: BaseException | None = None) -> None:
        self.errors.append((kind, message))


class Slow(VoiceFlow):
    greet = Say("Hello.", initial=True)
    bye = Hangup("Bye.")
    spoken = greet.to(bye)

    def on_enter_greet(self) -> None:
        time.sleep(0.3)  # as requests.get would


async def test_on_a_real_clock_a_blocking_hook_does_not_freeze_the_loop_and_is_named() -> None:
    listener = Errors()
    runtime = FlowRuntime(Slow, Call(call_sid="CAslow"), ScriptedTextToSpeech(), listeners=[listener])
    lags: list[float] = []

    async def heartbeat() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    beat = asyncio.create_task(heartbeat())
    try:
        value = await runtime._run_callback("on_enter_greet", "flow.py:1", Slow.on_enter_greet, (Slow(),), {})
    finally:
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
    assert value is None
    assert len(lags) >= 10 and max(lags) < 0.1  # other calls kept their turns: the loop kept beating
    [(kind, message)] = listener.errors
    assert kind == "blocking"
    assert message.startswith("Slow.greet: on_enter_greet (flow.py:1) blocked for more than 50 ms")


class AsyncHook(VoiceFlow):
    greet = Say("Hello.", initial=True)
    bye = Hangup("Bye.")
    spoken = greet.to(bye)

    named: ClassVar[list[tuple[str | None, str]]] = []

    async def on_enter_bye(self) -> None:
        type(self).named.append((current_callback.get(), threading.current_thread().name))


async def test_async_flow_code_runs_on_the_loop_and_is_named_for_the_watchdog() -> None:
    AsyncHook.named.clear()
    async with FlowLine(AsyncHook) as line:
        await line.ended()
    [(named, thread)] = AsyncHook.named
    assert thread == threading.current_thread().name  # the loop's thread
    assert named is not None and named.startswith("AsyncHook.bye: on_enter_bye (")
