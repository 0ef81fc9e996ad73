"""The endings: final states after which the runtime speaks, acts, and hangs up.

``Hangup`` says goodbye; ``Transfer`` hands the call to a number; ``SendSms`` texts the caller
(or another number). Their work runs once the chart has ended (:meth:`Ending.finish`); a
template that cannot be filled there makes the runtime apologise instead.
"""

from __future__ import annotations

from typing import Any, ClassVar

from voicefsm.flow.errors import TemplateError
from voicefsm.flow.kinds.base import ActivityHost, StateKind


class Ending(StateKind):
    """A final state: the runtime says ``prompt`` (if any), does the action, and hangs up.

    ``outcome`` is what the call record says about a call that ended here.
    """

    kind = "ending"
    default_outcome: ClassVar[str] = "completed"

    def __init__(
        self,
        prompt: str | None = None,
        *,
        outcome: str | None = None,
        name: str = "",
        enter: Any = None,
    ) -> None:
        super().__init__(prompt, name=name, final=True, barge_in=False, enter=enter)
        self.outcome = outcome or self.default_outcome

    async def finish(self, host: ActivityHost) -> None:
        """Say the goodbye, then :meth:`act`; a template that fails makes it apologise instead."""
        try:
            goodbye = host.render(self.prompt) if self.prompt else ""
            if goodbye and host.line_open():
                await host.say_last(goodbye, self.id)
            await self.act(host)
        except TemplateError:
            if host.line_open():
                await host.say_last(host.flow.apology, self.id)

    async def act(self, host: ActivityHost) -> None:
        """What the ending does after its goodbye (nothing: the runtime hangs up)."""


class Hangup(Ending):
    """Say goodbye (``prompt``, optional) and hang up."""

    kind = "hangup"


class Transfer(Ending):
    """Say ``prompt`` (optional) and transfer the call to ``number`` (a template, e.g. ``"{agent}"``)."""

    kind = "transfer"
    default_outcome = "transferred"

    def __init__(
        self,
        prompt: str | None = None,
        *,
        number: str,
        outcome: str | None = None,
        name: str = "",
        enter: Any = None,
    ) -> None:
        super().__init__(prompt, outcome=outcome, name=name, enter=enter)
        self.number = number

    def templates(self) -> dict[str, str]:
        return {**super().templates(), "number": self.number}

    def argument_problems(self) -> list[tuple[str, str]]:
        if not self.number:
            return [("has no number to transfer to", 'give it number="+15551234567"')]
        return []

    def spec_fields(self) -> dict[str, Any]:
        return {**super().spec_fields(), "transfer_to": self.number}

    async def act(self, host: ActivityHost) -> None:
        await host.transfer(host.render(self.number))


class SendSms(Ending):
    """Say ``prompt`` (optional), text ``body`` (a template) to ``to`` (default: the caller), hang up."""

    kind = "send_sms"

    def __init__(
        self,
        prompt: str | None = None,
        *,
        body: str,
        to: str | None = None,
        outcome: str | None = None,
        name: str = "",
        enter: Any = None,
    ) -> None:
        super().__init__(prompt, outcome=outcome, name=name, enter=enter)
        self.body = body
        self.recipient = to  # not `to`: State.to builds transitions

    def templates(self) -> dict[str, str]:
        found = {**super().templates(), "sms body": self.body}
        if self.recipient:
            found["sms to"] = self.recipient
        return found

    def argument_problems(self) -> list[tuple[str, str]]:
        if not self.body:
            return [("has an empty SMS body", 'give it body="Your booking: {day}"')]
        return []

    def spec_fields(self) -> dict[str, Any]:
        return {**super().spec_fields(), "sms_body": self.body, "sms_to": self.recipient}

    async def act(self, host: ActivityHost) -> None:
        to = host.render(self.recipient) if self.recipient else host.flow.caller
        body = host.render(self.body)
        if not to:
            host.fail("action", f"{self.id}: no number to text (the caller's number is unknown)")
        else:
            await host.send_sms(to, body)
