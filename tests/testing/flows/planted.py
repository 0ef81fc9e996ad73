"""Flows with planted bugs, for the fault runs and the random callers to find.

``UnboundedMenu`` is the hang the issue names: a listening state whose no_input leads back to
itself with nothing to bound it. ``validate``'s static checks reject it when the class is
created (a loop no caller input breaks), so it is built with those checks switched off
(:func:`static_checks_skipped` replaces the metaclass's ``check_flow`` with one that finds
nothing): the dynamic run must find the hang on its own. The other bugs pass the static checks:
they hide in guards and flow code, which only a run can see.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from voicefsm.flow import Ask, Choice, Hangup, Say, VoiceFlow

MENU = Choice({"billing": [], "support": []}, keys={"1": "billing", "2": "support"})


@contextmanager
def static_checks_skipped() -> Iterator[None]:
    """Create flow classes without ``validate``'s static checks (a test seam, never for real flows)."""
    with mock.patch("voicefsm.flow.chart.check_flow", return_value=[]):
        yield


with static_checks_skipped():

    class UnboundedMenu(VoiceFlow):
        """On silence the menu asks again, and again: no retry count, no way out but an answer."""

        greet = Say("Hello.", initial=True)
        menu = Ask("Billing or support?", expect=MENU, retries=0)
        done = Hangup("Bye.")

        spoken = greet.to(menu)
        filled = menu.to(done)
        no_input = menu.to(menu)
        no_match = menu.to(done)


class GuardedForever(VoiceFlow):
    """Passes the static checks: the self-loop is guarded, and the guard always holds."""

    greet = Say("Hello.", initial=True)
    menu = Ask("Billing or support?", expect=MENU, retries=0)
    done = Hangup("Bye.")

    spoken = greet.to(menu)
    filled = menu.to(done)
    no_input = menu.to(menu, cond="still_there") | menu.to(done)
    no_match = menu.to(done)

    def still_there(self) -> bool:
        """Guard: believes the caller is always about to answer."""
        return True


class StuckLookup(VoiceFlow):
    """Awaits a lookup that never answers while entering the menu: nothing is pending, nothing moves."""

    greet = Say("Hello.", initial=True)
    menu = Ask("Billing or support?", expect=MENU, retries=0)
    done = Hangup("Bye.")

    spoken = greet.to(menu)
    filled = menu.to(done)
    no_input = menu.to(done)
    no_match = menu.to(done)

    async def on_enter_menu(self) -> None:
        """Waits for an answer from a service that was never asked."""
        await asyncio.Event().wait()


class LeakyGreeting(VoiceFlow):
    """Starts a background task on entering the menu and never ends it."""

    greet = Say("Hello.", initial=True)
    menu = Ask("Billing or support?", expect=MENU, retries=0)
    done = Hangup("Bye.")

    spoken = greet.to(menu)
    filled = menu.to(done)
    no_input = menu.to(done)
    no_match = menu.to(done)

    async def on_enter_menu(self) -> None:
        """Looks up the caller in the background, and forgets the task (async: sync hooks run off-loop)."""
        self.lookup = asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="forgotten-lookup")


class SecretRoom(VoiceFlow):
    """``vip`` is reachable in the spec, but its guard never lets a caller in."""

    greet = Say("Hello.", initial=True)
    menu = Ask("Billing or support?", expect=MENU, retries=0)
    vip = Hangup("Welcome, very important caller.")
    done = Hangup("Bye.")

    spoken = greet.to(menu)
    filled = menu.to(vip, cond="is_vip") | menu.to(done)
    no_input = menu.to(done)
    no_match = menu.to(done)

    def is_vip(self) -> bool:
        """Guard: nobody is."""
        return False


class HangsUpOnBilling(VoiceFlow):
    """Only one answer leads to the trap: random callers must find and shrink to it."""

    greet = Say("Hello.", initial=True)
    menu = Ask("Billing or support?", expect=MENU, retries=0)
    billing = Ask("Your account number?", expect=MENU, retries=0)
    done = Hangup("Bye.")

    spoken = greet.to(menu)
    filled = menu.to(billing, cond="wants_billing") | menu.to(done) | billing.to(done)
    no_input = menu.to(done) | billing.to(billing, cond="still_there") | billing.to(done)
    no_match = menu.to(done) | billing.to(done)

    def wants_billing(self, value: object) -> bool:
        """Guard: the caller chose billing."""
        return value == "billing"

    def still_there(self) -> bool:
        """Guard: the bug: always believes the caller will answer."""
        return True


class SlowHook(VoiceFlow):
    """Blocks the call for 3 s on entering the menu, as a `requests.get` would."""

    greet = Say("Hello.", initial=True)
    menu = Ask("Billing or support?", expect=MENU, retries=0)
    done = Hangup("Bye.")

    spoken = greet.to(menu)
    filled = menu.to(done)
    no_input = menu.to(done)
    no_match = menu.to(done)

    def on_enter_menu(self) -> None:
        """A blocking lookup."""
        time.sleep(3)
