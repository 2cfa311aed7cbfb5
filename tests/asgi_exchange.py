"""One HTTP request driven through an ASGI application as a server drives it, counting what the
application receives of the body."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from http.cookies import SimpleCookie

from asgiref.sync import async_to_sync
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

MIB = 1024 * 1024


class Exchange:
    """One HTTP request through an ASGI application: what it received of the body, and its answer."""

    def __init__(self, application, path: str, chunks: Iterable[bytes], headers: dict[str, str]) -> None:
        self.received = 0
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        self.cookies: SimpleCookie = SimpleCookie()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver")] + [(k.encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 40000),
            "server": ("testserver", 80),
        }
        body = iter(chunks)
        following = next(body, None)

        async def receive() -> dict:
            nonlocal following
            if following is None:  # the whole body is sent: a server waits for the client to leave
                await asyncio.Event().wait()
            chunk, following = following, next(body, None)
            self.received += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": following is not None}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
                for name, value in message["headers"]:
                    if name.lower() == b"set-cookie":
                        self.cookies.load(value.decode())
            elif message["type"] == "http.response.body":
                self.body += message.get("body", b"")

        async def run() -> None:
            await application(scope, receive, send)

        # The handler's request signals would close the test's connection, in its transaction
        # (Django's test client disconnects the same receiver).
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            async_to_sync(run)()
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


def huge(total: int) -> Iterable[bytes]:
    """``total`` bytes of a form's body, a mebibyte at a time."""
    block = b"\0" * MIB
    for _ in range(total // MIB):
        yield block
