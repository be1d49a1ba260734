"""The live map's web server: the page, and frames pushed to each viewer over a WebSocket.

One asyncio loop in a thread of its own (the ``websockets`` library: RFC 6455 framing, close
handshakes, keepalive pings and size limits done right, no other dependency). Paths: ``/``
and the page's assets, ``/healthz`` (JSON counters), ``/ws`` (the frame stream); anything
else is a plain 404, a method other than GET/HEAD a 405.

Flow control, so that nothing a browser does can slow the feeder or grow memory:

- Frames are built on demand from the newest snapshot in the hub, at most ``fps`` a second
  per viewer; snapshots that arrive meanwhile are skipped (counted as dropped), never queued.
- A viewer acknowledges each frame after drawing it; at most ``window`` frames are
  unacknowledged, so a page that draws slowly gets fewer frames and a stalled one none (its
  socket holds at most ``window`` frames). A frame that cannot be written within
  ``send_timeout_s`` drops the connection.
- Connections are capped (``max_connections``; the excess get ``503`` at once), a request
  must arrive within ``idle_timeout_s``, viewers are capped (``max_viewers``), client
  messages are limited to 4 KiB and must be ``{"type": "view"|"ack", ...}`` JSON (an error
  message answers anything else; repeated offenders are closed with code 1008).
- WebSocket upgrades from another site's page are refused (``Origin`` must match ``Host``),
  so a page on the internet cannot read the fleet through a viewer's browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import orjson

from trajstream.errors import ConfigError
from trajstream.stream.livemap.frames import View, encode_frame, path_step, select
from trajstream.stream.livemap.hub import HubState, MapHub

__all__ = ["MapServer", "ServerConfig"]

log = logging.getLogger("trajstream.stream.livemap")
# websockets logs every HTTP response and closed connection at INFO: a browser's reloads
# would fill the processor's log. A level already set (--log-level INFO,websockets=INFO)
# is left alone.
if logging.getLogger("websockets").level == logging.NOTSET:
    logging.getLogger("websockets").setLevel(logging.WARNING)

MAX_MESSAGE_BYTES = 4096
# Connections the kernel queues before the loop accepts them; asyncio's default (100) drops
# a burst of connections silently instead of answering 503.
LISTEN_BACKLOG = 1024
MAX_BAD_MESSAGES = 20
_ASSETS = {  # path -> (file in static/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/map.js": ("map.js", "text/javascript; charset=utf-8"),
    "/map.css": ("map.css", "text/css; charset=utf-8"),
}
_SECURITY_HEADERS = [
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
     "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
]


@dataclass(frozen=True)
class ServerConfig:
    """How the map is served.

    - ``host``/``port``: where to listen; 127.0.0.1 unless told otherwise (the map shows
      where every vehicle is); ``port=0`` picks a free one.
    - ``fps``: frames per second per viewer at most (a map needs no more than a few).
    - ``window``: frames a viewer may have unacknowledged (drawn) before it gets no more.
    - ``max_connections``/``max_viewers``/``idle_timeout_s``/``send_timeout_s``: see the
      module docstring; they bound memory whatever clients do.
    - ``max_vehicles``: vehicles per frame at most (the nearest the viewport's centre).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    fps: float = 4.0
    window: int = 2
    max_connections: int = 256
    max_viewers: int = 32
    idle_timeout_s: float = 10.0
    send_timeout_s: float = 30.0
    max_vehicles: int = 20_000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and 0 < self.fps <= 30):
            raise ConfigError(f"map fps must be in (0, 30], got {self.fps!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"map port must be in 0..65535, got {self.port!r}")
        for name in ("window", "max_connections", "max_viewers", "max_vehicles"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"map {name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("idle_timeout_s", "send_timeout_s"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"map {name} must be > 0, got {value!r}")


class _BadMessage(ValueError):
    pass


@dataclass(eq=False)
class _Viewer:
    ws: Any
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    view: View | None = None
    view_changed: bool = True
    in_flight: int = 0
    sent_version: int = -1
    last_sent: float = -math.inf
    seq: int = 0
    dropped: int = 0
    bad: int = 0


class MapServer:
    """Serves the map of ``hub``; :meth:`start` binds (raising OSError when it cannot) and
    returns once listening; :meth:`stop` closes every connection."""

    def __init__(self, hub: MapHub, config: ServerConfig | None = None) -> None:
        self.hub = hub
        self.config = config or ServerConfig()
        self.counters = {"connections": 0, "busy": 0, "frames": 0, "dropped": 0,
                         "bad_messages": 0, "not_found": 0, "slow_viewers": 0}
        self._assets = {path: (_read_asset(name), ctype) for path, (name, ctype) in
                        _ASSETS.items()}
        self._viewers: set[_Viewer] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._wake_pending = False
        self.port: int | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> MapServer:
        ready: dict[str, Any] = {}
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready, started),
                                        name="map-server", daemon=True)
        self._thread.start()
        started.wait()
        if "error" in ready:
            self._thread.join()
            raise ready["error"]
        self.hub.add_listener(self._on_hub_change)
        return self

    def stop(self) -> None:
        self.hub.remove_listener(self._on_hub_change)
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104
        return f"http://{shown}:{self.port}/"

    def _run(self, ready: dict[str, Any], started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready, started))
        finally:
            started.set()
            loop.close()

    async def _main(self, ready: dict[str, Any], started: threading.Event) -> None:
        from websockets.asyncio.server import ServerConnection, serve

        cfg = self.config
        self._stopping = asyncio.Event()
        counters = self.counters

        class _Capped(ServerConnection):
            """Refuses connections beyond the cap before reading anything from them."""

            def connection_made(self, transport: Any) -> None:
                super().connection_made(transport)
                counters["connections"] += 1
                if len(self.server.handler_tasks) > cfg.max_connections:
                    counters["busy"] += 1
                    transport.write(_BUSY)
                    transport.close()

        try:
            server = await serve(
                self._viewer, cfg.host, cfg.port, process_request=self._http,
                create_connection=_Capped, open_timeout=cfg.idle_timeout_s,
                max_size=MAX_MESSAGE_BYTES, max_queue=8, compression=None,
                ping_interval=20.0, ping_timeout=20.0, close_timeout=2.0,
                server_header=None, backlog=LISTEN_BACKLOG,
            )
        except OSError as exc:
            ready["error"] = exc
            started.set()
            return
        self.port = int(server.sockets[0].getsockname()[1])
        started.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5.0)

    def _on_hub_change(self) -> None:
        """Feeder thread: schedule one wake-up of the viewers (coalesced)."""
        loop = self._loop
        if loop is None or self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # loop closed while stopping
            loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        self._wake_pending = False
        for v in self._viewers:
            v.wake.set()

    # -- HTTP --------------------------------------------------------------------------------

    def _http(self, conn: Any, request: Any) -> Any:
        path = urlsplit(request.path).path
        method = getattr(request, "method", "GET")
        if method not in ("GET", "HEAD"):
            return _response(405, "method not allowed: use GET\n",
                             extra=[("Allow", "GET, HEAD")])
        if path == "/ws":
            origin = request.headers.get("Origin")
            host = request.headers.get("Host", "")
            if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
                return _response(403, "cross-origin map connections are not allowed\n")
            if len(self._viewers) >= self.config.max_viewers:
                self.counters["busy"] += 1
                return _response(503, "too many map viewers, try again later\n")
            return None  # the WebSocket handshake goes on
        if path == "/healthz":
            return _response(200, orjson.dumps(self.health()) + b"\n",
                             ctype="application/json", head=method == "HEAD")
        asset = self._assets.get(path)
        if asset is None:
            self.counters["not_found"] += 1
            return _response(404, f"not found: {path[:200]}\n")
        body, ctype = asset
        return _response(200, body, ctype=ctype, extra=_SECURITY_HEADERS,
                         head=method == "HEAD")

    def health(self) -> dict[str, Any]:
        state = self.hub.state()
        age = time.time() - state.fleet_wall
        return {
            "status": "ok",
            "viewers": len(self._viewers),
            "vehicles": len(state.fleet),
            "open_alerts": len(state.open_alerts),
            "feed_age_s": round(age, 3) if math.isfinite(age) else None,
            **self.counters,
            **{f"hub_{k}": v for k, v in state.counters.items()},
        }

    # -- viewers -----------------------------------------------------------------------------

    async def _viewer(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        v = _Viewer(ws)
        self._viewers.add(v)
        self._count_ready()
        sender = asyncio.create_task(self._send_frames(v))
        sender.add_done_callback(lambda task: self._sender_done(task, ws))
        try:
            async for message in ws:
                try:
                    self._on_message(v, message)
                except _BadMessage as exc:
                    v.bad += 1
                    self.counters["bad_messages"] += 1
                    if v.bad >= MAX_BAD_MESSAGES:
                        await ws.close(1008, "too many malformed messages")
                        break
                    await ws.send(orjson.dumps({"type": "error", "message": str(exc)}).decode())
        except ConnectionClosed:
            pass
        finally:
            self._viewers.discard(v)
            self._count_ready()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    def _count_ready(self) -> None:
        """Tell the hub how many viewers can take a frame (a stalled one cannot)."""
        window = self.config.window
        self.hub.viewers = sum(1 for v in self._viewers if v.in_flight < window)

    def _sender_done(self, task: asyncio.Task[None], ws: Any) -> None:
        """A frame that cannot be built is a bug: log it, close the viewer (it reconnects)."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("live map: building a frame failed: %s: %s", type(exc).__name__, exc,
                  exc_info=exc)
        asyncio.ensure_future(ws.close(1011, "frame failed"))

    def _on_message(self, v: _Viewer, message: str | bytes) -> None:
        if not isinstance(message, str):
            raise _BadMessage("binary messages are not accepted; send JSON text")
        try:
            msg = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            raise _BadMessage("not JSON; expected {\"type\": \"view\"|\"ack\", ...}") from exc
        if not isinstance(msg, dict):
            raise _BadMessage("expected a JSON object with a \"type\"")
        kind = msg.get("type")
        if kind == "ack":
            v.in_flight = max(0, v.in_flight - 1)
            self._count_ready()
        elif kind == "view":
            try:
                v.view = View.parse(msg)
            except ValueError as exc:
                raise _BadMessage(str(exc)) from exc
            v.view_changed = True
        else:
            raise _BadMessage(f"unknown message type {str(kind)[:40]!r}; expected view or ack")
        v.wake.set()

    async def _send_frames(self, v: _Viewer) -> None:
        from websockets.exceptions import ConnectionClosed

        cfg = self.config
        interval = 1.0 / cfg.fps
        v.wake.set()  # the current state right away
        while True:
            await v.wake.wait()
            v.wake.clear()
            if v.in_flight >= cfg.window:
                continue  # the next ack wakes us
            if self.hub.state().version == v.sent_version and not v.view_changed:
                continue
            delay = v.last_sent + interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            state = self.hub.state()  # the newest, after waiting
            frame = self._frame(v, state)
            if v.sent_version >= 0 and state.version > v.sent_version + 1:
                skipped = state.version - v.sent_version - 1
                v.dropped += skipped
                self.counters["dropped"] += skipped
            v.sent_version = state.version
            v.view_changed = False
            v.in_flight += 1
            self._count_ready()
            v.last_sent = time.monotonic()
            try:
                await asyncio.wait_for(v.ws.send(frame), cfg.send_timeout_s)
            except ConnectionClosed:
                return  # the viewer went away; its handler cleans up
            except TimeoutError:
                self.counters["slow_viewers"] += 1
                log.info("map viewer dropped: a frame took over %.0f s to send",
                         cfg.send_timeout_s)
                v.ws.transport.abort()
                return
            self.counters["frames"] += 1

    def _frame(self, v: _Viewer, state: HubState) -> bytes:
        fleet = state.fleet
        rows = select(fleet, v.view, state.alert_vehicles, self.config.max_vehicles)
        mpp = v.view.m_per_px if v.view is not None else 2.0
        v.seq += 1
        stats = dict(state.stats)
        stats.update(viewers=len(self._viewers), dropped=v.dropped)
        header = {
            "type": "frame", "seq": v.seq, "t": fleet.ts if math.isfinite(fleet.ts) else None,
            "wall": time.time(), "total": len(fleet), "open": state.open_alerts,
            "recent": state.recent_alerts, "stats": stats,
        }
        return encode_frame(fleet, rows, path_step(mpp, fleet.paths.shape[1]), state.origin,
                            header)


def _read_asset(name: str) -> bytes:
    return resources.files("trajstream.stream.livemap").joinpath("static", name).read_bytes()


def _response(status: int, body: str | bytes, *, ctype: str = "text/plain; charset=utf-8",
              extra: list[tuple[str, str]] | None = None, head: bool = False) -> Any:
    import http

    from websockets.datastructures import Headers
    from websockets.http11 import Response

    data = body.encode() if isinstance(body, str) else body
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Length", str(len(data))),
        ("Content-Type", ctype),
        *(extra or []),
    ])
    return Response(status, http.HTTPStatus(status).phrase, headers, b"" if head else data)


_BUSY_BODY = b"too many connections, try again later\n"
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
         b"Content-Type: text/plain; charset=utf-8\r\n"
         b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))
