"""uvicorn with the limits it lacks: a deadline for a request's headers and one for its body, and a cap on
open connections, so that slow or idle clients cannot hold the server's sockets.

uvicorn's `timeout_keep_alive` closes a connection only when it is idle *between* requests, and any byte
resets it; a request that never finishes arriving is kept open for ever, and ASGI middleware never sees
it (it runs once the headers are parsed). The limits therefore live in uvicorn's HTTP protocol.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("carseg.serve")


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a client may take to send a request, and how many connections may be open at once."""

    header_timeout: float = 10.0  # from the first byte (or the connection) to the end of the headers
    body_timeout: float = 60.0  # from the end of the headers to the end of the body
    max_connections: int = 128
    keep_alive: float = 5.0  # an idle connection between requests (uvicorn's timeout_keep_alive)

    def problems(self) -> list[tuple[str, Any, str]]:
        """(field, value, what to give) of each limit that is not positive; each face names its own field."""
        found = [
            (name, getattr(self, name), "a positive number of seconds")
            for name in ("header_timeout", "body_timeout", "keep_alive")
            if not getattr(self, name) > 0
        ]
        if self.max_connections < 1:
            found.append(("max_connections", self.max_connections, "at least 1"))
        return found

    def check(self) -> None:
        """Each limit positive, else a ValueError naming it."""
        for name, value, fix in self.problems()[:1]:
            raise ValueError(f"{name}={value}: give {fix}")


def _response(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
    return (head + "Connection: close\r\n\r\n").encode() + body


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with `limits` enforced; `protocol_class` binds the limits."""

    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # "headers" or "body" while a request is arriving
        self._idle_since: float | None = None  # since when the connection holds no byte of a request

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        if len(self.connections) > self.limits.max_connections and not self._evict_idle():
            log.warning("refused a connection: %d are open (the limit)", self.limits.max_connections)
            transport.write(_response(503, "Service Unavailable", "too many open connections; retry later\n"))
            transport.close()
            return
        self._arm("headers", self.limits.header_timeout)

    def _evict_idle(self) -> bool:
        """Close the connection idle the longest (no byte of a request on it, no answer being made), so that
        idle sockets holding every place cannot lock out a client with a request; False when none is idle."""
        idle = [c for c in self.connections if c is not self and getattr(c, "_idle_since", None) is not None]
        idle = [c for c in idle if not c.transport.is_closing()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._idle_since)
        log.info("closed the connection idle longest to make room: %d are open (the limit)", len(self.connections))
        oldest._disarm()
        oldest._idle_since = None
        oldest.transport.close()
        return True

    def data_received(self, data: bytes) -> None:
        self._idle_since = None
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()
        if self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]:
            self._idle_since = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Arm the deadline of the part of the request now arriving; none once it is in."""
        if self.transport.is_closing():
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.IDLE and self.conn.our_state is h11.IDLE and self.conn.trailing_data[0]:
            self._arm("headers", self.limits.header_timeout)  # bytes of a request, its headers not yet complete
        elif state is h11.SEND_BODY:
            self._arm("body", self.limits.body_timeout)
        elif state is not h11.IDLE:
            self._disarm()

    def _arm(self, phase: str, seconds: float) -> None:
        if self._phase == phase:
            return  # a deadline runs from the start of its part, not from the newest byte
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._phase = None, None

    def _expired(self) -> None:
        phase, self._deadline, self._phase = self._phase, None, None
        if self.transport.is_closing():
            return
        seconds = self.limits.header_timeout if phase == "headers" else self.limits.body_timeout
        log.warning("closed a connection whose request %s did not arrive within %g s", phase, seconds)
        if phase == "headers":  # nothing has been answered yet
            self.transport.write(_response(408, "Request Timeout", f"request headers not complete in {seconds:g} s\n"))
        self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[LimitedH11Protocol]:
    """The protocol class to hand uvicorn (`http=`), enforcing `limits`."""
    limits.check()
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {"limits": limits})


def run(app: Any, host: str, port: int, limits: ConnectionLimits, log_level: str = "info") -> None:
    """Serve `app` with uvicorn under `limits`."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol_class(limits),
        timeout_keep_alive=limits.keep_alive,
    )
