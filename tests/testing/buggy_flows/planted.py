"""Flows with bugs the static checks cannot see, for the fault runs to find."""

from __future__ import annotations

import asyncio

from voicefsm.flow import Ask, Choice, Hangup, Say, VoiceFlow

MENU = Choice({"billing": [], "support": []})


class EndlessMenu(VoiceFlow):
    """On silence the menu asks again for as long as its guard says so, and the guard always does."""

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


class LeakyGreeting(VoiceFlow):
    """Starts a background task on entering the menu and never ends it."""

    greet = Say("Hello.", initial=True)
    menu = Ask("Billing or support?", expect=MENU, retries=0)
    done = Hangup("Bye.")

    spoken = greet.to(menu)
    filled = menu.to(done)
    no_input = menu.to(done)
    no_match = menu.to(done)

    def on_enter_menu(self) -> None:
        """Looks up the caller in the background, and forgets the task."""
        self.lookup = asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="forgotten-lookup")
