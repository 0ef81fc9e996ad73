"""The floor: the smallest FastAPI/uvicorn app that echoes Twilio media frames, as most tutorials write it.

Every ``media`` message is parsed with ``json.loads``, its payload decoded to audio bytes and
encoded again, and sent back as an outbound ``media`` message with ``json.dumps``. No greeting,
no marks, no call state. Served by ``uvicorn.run`` with its defaults (uvloop and httptools when
installed). Run: ``python benchmarks/floor_echo.py --port 8090``.
"""

from __future__ import annotations

import argparse
import base64
import json

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Readiness probe for the harness."""
    return {"status": "ok"}


@app.websocket("/twilio/stream")
async def stream(websocket: WebSocket) -> None:
    """Echo every inbound media frame straight back; end on ``stop`` or disconnect."""
    await websocket.accept()
    stream_sid = ""
    try:
        while True:
            message = json.loads(await websocket.receive_text())
            event = message.get("event")
            if event == "start":
                stream_sid = message["start"]["streamSid"]
            elif event == "media":
                audio = base64.b64decode(message["media"]["payload"])
                reply = {
                    "event": "media",
                    "streamSid": stream_sid,
                    "media": {"payload": base64.b64encode(audio).decode("ascii")},
                }
                await websocket.send_text(json.dumps(reply))
            elif event == "stop":
                break
    except WebSocketDisconnect:
        return
    await websocket.close()


def main() -> None:
    """Serve the floor echo on loopback."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
