"""An ASGI middleware that bounds request bodies before FastAPI parses them.

FastAPI parses a multipart form completely before the endpoint runs: every byte of an upload
is spooled (to memory, then to a temporary file) first, so a limit checked in the endpoint
comes after a 500 MB upload has already been written to disk. This middleware sits in front:

* a ``Content-Length`` above the limit is answered with 413 before one byte is read;
* a body without one (chunked) or one that lies is counted while it streams, and reading
  stops at the first chunk past the limit; the 413 replaces whatever the app would answer.

The limit covers the whole body: the file plus the multipart boundaries, part headers and the
small form fields, for which :data:`MULTIPART_MARGIN` bytes are allowed on top of the file limit
(the endpoint still checks the file's exact size).
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

#: room for multipart boundaries, part headers and small form fields beside the file
MULTIPART_MARGIN = 64 * 1024

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _BodyTooLarge(Exception):
    """Raised inside ``receive`` to stop the app's parser reading more."""


class BodyLimit:
    """Refuse HTTP request bodies larger than ``max_body`` bytes with ``413`` and a JSON ``error``."""

    def __init__(self, app: Any, max_body: int, message: str):
        self.app = app
        self.max_body = int(max_body)
        self.message = message

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": self.message}).encode("utf-8")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode("ascii")),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_body
            except ValueError:
                too_large = False  # the server rejects a malformed header itself
            if too_large:
                await self._refuse(send)
                return
        state = {"received": 0, "exceeded": False, "started": False}

        async def limited_receive() -> Message:
            if state["exceeded"]:
                raise _BodyTooLarge()
            message = await receive()
            if message.get("type") == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    state["exceeded"] = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            if state["exceeded"]:
                return  # the app's answer to a broken body (400) is replaced by the 413 below
            state["started"] = state["started"] or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["started"]:
            await self._refuse(send)
