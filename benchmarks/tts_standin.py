"""A stand-in for ElevenLabs' streaming text-to-speech, on loopback, with a set time to first byte.

``voicefsm serve ... --tts elevenlabs`` with ``ELEVENLABS_BASE_URL`` pointing here runs the real
provider (the ElevenLabs SDK over httpx) against it. Every ``POST
/v1/text-to-speech/{voice}/stream`` waits ``--first-byte-ms`` (0.4 s is what the real service
takes), then streams mu-law audio as fast as the socket takes it: 65 ms of audio per character
of the text, in 160-byte chunks, like the scripted provider. ``GET /stats`` answers how many
requests each text got (JSON), so a run can tell whether a prompt was synthesized once or per call.

Run: ``python benchmarks/tts_standin.py --port 8091 --first-byte-ms 400``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

MS_PER_CHARACTER = 65
CHUNK_BYTES = 160
SILENCE = 0xFF  # mu-law of zero

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class StandIn:
    """The ASGI app: synthesis after a delay, request counts by text."""

    def __init__(self, first_byte_s: float) -> None:
        self.first_byte_s = first_byte_s
        self.requests: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if scope["method"] == "GET" and path in ("/stats", "/healthz"):
            body = json.dumps({"requests": dict(self.requests), "total": sum(self.requests.values())})
            await _respond(send, 200, body.encode(), b"application/json")
            return
        if (
            scope["method"] != "POST"
            or not path.startswith("/v1/text-to-speech/")
            or not path.endswith("/stream")
        ):
            await _respond(send, 404, b"not found", b"text/plain")
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        text = str(json.loads(raw or b"{}").get("text", ""))
        self.requests[text] += 1
        await asyncio.sleep(self.first_byte_s)
        audio = bytes([SILENCE]) * max(CHUNK_BYTES, len(text) * MS_PER_CHARACTER * 8)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"audio/basic")],
            }
        )
        for start in range(0, len(audio), CHUNK_BYTES):
            await send(
                {"type": "http.response.body", "body": audio[start : start + CHUNK_BYTES], "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]}
    )
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    """Serve the stand-in on loopback until stopped."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument(
        "--first-byte-ms", type=float, default=400.0, help="delay before the first audio byte"
    )
    args = parser.parse_args()
    uvicorn.run(StandIn(args.first_byte_ms / 1000), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
