"""The telephony echo test line: a short greeting, then every frame the caller sends comes straight back.

Like Asterisk's Echo(): it measures the round trip of the whole audio path, and benchmarks use
it. The echo ends when the caller hangs up, or after ten minutes. The flow runs without speech
recognition (``uses_stt`` is False because of the Echo state), so the caller's audio is free
to be echoed.
"""

from __future__ import annotations

from voicefsm.flow import Echo, Say, VoiceFlow


class EchoTest(VoiceFlow):
    """Echo the caller's audio back."""

    greet = Say("Echo test. Everything you say will be played back to you.", initial=True, barge_in=False)
    echo = Echo(max_s=600.0)

    spoken = greet.to(echo)
