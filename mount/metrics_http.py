"""A tiny HTTP endpoint for Prometheus: GET /metrics on a loopback port.

It answers one request per connection and never lets an error escape: a bad
client must not end the mount.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

log = logging.getLogger("casfs.mount")
MAX_REQUEST = 8192


async def serve(port: int, render: Callable[[], bytes], *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    log.info("metrics on http://127.0.0.1:%d/metrics", port)
    task_status.started()

    async def handle(stream: trio.SocketStream) -> None:
        await _answer(stream, render)

    await trio.serve_listeners(handle, listeners)


async def _answer(stream: trio.SocketStream, render: Callable[[], bytes]) -> None:
    try:
        with trio.move_on_after(5):
            request = b""
            while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                request += chunk
            words = request.split(b" ", 2)
            if len(words) >= 2 and words[0] == b"GET" and words[1] in (b"/metrics", b"/"):
                status, body = "200 OK", render()
            else:
                status, body = "404 Not Found", b"try GET /metrics\n"
            head = (f"HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            await stream.send_all(head.encode() + body)
    except Exception:
        log.exception("metrics request failed")
    finally:
        await stream.aclose()
