"""Live map server on real sockets (127.0.0.1): the page, clean errors for bad input,
flow control for slow viewers, and bounded resources under a thousand idle connections."""

from __future__ import annotations

import contextlib
import http.client
import resource
import selectors
import socket
import time
from collections.abc import Iterator

import numpy as np
import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from trajstream.stream.livemap import MapHub, MapServer, ServerConfig
from trajstream.stream.livemap.frames import FleetSnapshot, decode_frame

T0 = 1764081000.0


def _fleet(n: int, ts: float = T0) -> FleetSnapshot:
    x = 10.0 * np.arange(n, dtype=np.float64)
    t = 0.2 * np.arange(1, 21)
    paths = np.stack([x[:, None] + 10.0 * t, np.zeros((n, 20))], axis=-1)
    return FleetSnapshot(ts=ts, ids=np.array([f"v{i}" for i in range(n)], dtype=object), x=x,
                         y=np.zeros(n), heading=np.zeros(n), length=np.full(n, 4.5),
                         width=np.full(n, 1.8), paths=paths,
                         sigma=np.full((n, 20), 0.5, dtype=np.float32))


@pytest.fixture
def served() -> Iterator[tuple[MapHub, MapServer]]:
    hub = MapHub()
    hub.publish_fleet(_fleet(50))
    server = MapServer(hub, ServerConfig(port=0, fps=30.0, idle_timeout_s=2.0,
                                         max_connections=64)).start()
    try:
        yield hub, server
    finally:
        server.stop()


def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _ws(server: MapServer, **kw: object):  # noqa: ANN202
    return connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=10, **kw)  # type: ignore[arg-type]


def test_binds_loopback_by_default():
    assert ServerConfig().host == "127.0.0.1"


def test_serves_the_page_its_assets_and_health(served):
    _, server = served
    status, headers, body = _get(server.port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'src="map.js"' in body and b"http" not in body.replace(b"http-equiv", b"")
    assert "script-src 'self'" in headers["content-security-policy"]
    for path, kind in (("/map.js", "text/javascript"), ("/map.css", "text/css")):
        status, headers, body = _get(server.port, path)
        assert status == 200 and headers["content-type"].startswith(kind) and body
    status, headers, body = _get(server.port, "/healthz")
    health = orjson.loads(body)
    assert status == 200 and health["status"] == "ok" and health["vehicles"] == 50


def test_page_fetches_nothing_from_elsewhere(served):
    _, server = served
    for path in ("/", "/map.js", "/map.css"):
        body = _get(server.port, path)[2].decode()
        assert "://" not in body.replace('"wss://"', "").replace('"ws://"', ""), path


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/nope", 404), ("GET", "/../../etc/passwd", 404), ("POST", "/", 405),
    ("DELETE", "/ws", 405), ("GET", "/ws", 426),
])
def test_unknown_paths_and_methods_get_clean_http_errors(served, method, path, status):
    _, server = served
    got, headers, body = _get(server.port, path, method)
    assert got == status and headers["content-type"].startswith("text/plain") and body


def test_garbage_instead_of_http_is_closed_without_harm(served):
    _, server = served
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64 + b"\r\n\r\n")
        s.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            while s.recv(4096):
                pass
    assert _get(server.port, "/healthz")[0] == 200


def test_a_viewer_gets_frames_thinned_to_its_view(served):
    _, server = served
    with _ws(server) as ws:
        head, arr = decode_frame(ws.recv(timeout=10))
        assert head["n"] == 50 and head["total"] == 50 and head["p"] == 5
        ws.send(orjson.dumps({"type": "ack", "seq": head["seq"]}).decode())
        ws.send(orjson.dumps({"type": "view", "x0": 195, "y0": -10, "x1": 205, "y1": 10,
                              "mpp": 0.05}).decode())
        head, arr = decode_frame(ws.recv(timeout=10))
        assert head["p"] == 20 and 0 < head["n"] < 50
        assert np.all(np.abs(arr["x"] - 200.0) <= 80.0 + 40.0)


def test_malformed_messages_get_an_error_then_the_connection_is_closed(served):
    _, server = served
    with _ws(server) as ws:
        ws.recv(timeout=10)  # the first frame
        for bad in ("not json", "[1, 2]", '{"type": "zoom"}', '{"type": "view", "x0": 1}'):
            ws.send(bad)
            reply = ws.recv(timeout=10)
            assert isinstance(reply, str) and orjson.loads(reply)["type"] == "error"
        ws.send(b"\x00\x01binary")
        assert orjson.loads(ws.recv(timeout=10))["type"] == "error"
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(30):
                ws.send("still not json")
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert server.counters["bad_messages"] >= 20


def test_an_oversized_message_closes_with_1009(served):
    _, server = served
    with _ws(server) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.send("x" * 100_000)
        for _ in range(5):
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_other_sites_cannot_open_the_stream(served):
    _, server = served
    with pytest.raises(InvalidStatus) as refused:
        _ws(server, origin="http://evil.example").close()
    assert refused.value.response.status_code == 403
    with _ws(server, origin=f"http://127.0.0.1:{server.port}") as ws:
        assert decode_frame(ws.recv(timeout=10))[0]["n"] == 50


def test_a_viewer_that_never_acknowledges_gets_at_most_window_frames(served):
    hub, server = served
    window = server.config.window
    with _ws(server) as ws:
        got = [ws.recv(timeout=10)]
        for k in range(200):  # the feeder goes on, never waiting for the viewer
            hub.publish_fleet(_fleet(50, ts=T0 + k))
            with contextlib.suppress(TimeoutError):
                got.append(ws.recv(timeout=0.001))
        while len(got) < window:
            got.append(ws.recv(timeout=10))
        with pytest.raises(TimeoutError):
            got.append(ws.recv(timeout=1.0))
        assert len(got) == window
        ws.send(orjson.dumps({"type": "ack", "seq": 1}).decode())
        newest = decode_frame(ws.recv(timeout=10))[0]  # one ack, one more frame: the newest
        assert newest["t"] == T0 + 199
    assert server.counters["dropped"] > 100


def test_a_thousand_idle_connections_are_refused_or_timed_out_with_bounded_memory():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2500:
        pytest.skip(f"needs 2500 file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2500), hard))
    hub = MapHub()
    hub.publish_fleet(_fleet(10))
    server = MapServer(hub, ServerConfig(port=0, idle_timeout_s=3.0, max_connections=200)).start()
    socks: list[socket.socket] = []
    try:
        rss0 = _rss_kib()
        for _ in range(1000):
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        time.sleep(0.5)
        grown = _rss_kib() - rss0
        assert grown < 64 * 1024, f"RSS grew by {grown} KiB with 1000 connections open"
        # Every one of them ends on its own: the excess at once with 503, the ones let in
        # (max_connections) when the request timeout runs out.
        answers: dict[str, int] = {"busy": 0, "closed": 0, "other": 0}
        with selectors.DefaultSelector() as sel:
            for s in socks:
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
            left = len(socks)
            deadline = time.monotonic() + server.config.idle_timeout_s + 30
            while left and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=1.0):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(200)
                    except ConnectionResetError:
                        data = b""
                    kind = ("busy" if data.startswith(b"HTTP/1.1 503") else
                            "closed" if not data else "other")
                    answers[kind] += 1
                    sel.unregister(sock)
                    left -= 1
        assert left == 0 and answers["other"] == 0, answers
        assert answers["busy"] >= 1000 - server.config.max_connections, answers
        for s in socks:
            s.close()
        socks.clear()
        status, _, body = _get(server.port, "/healthz")  # and it serves as before
        assert status == 200 and orjson.loads(body)["busy"] == answers["busy"]
    finally:
        for s in socks:
            s.close()
        server.stop()


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_port_in_use_is_an_oserror_at_start():
    hub = MapHub()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            MapServer(hub, ServerConfig(port=s.getsockname()[1])).start()


@pytest.mark.parametrize(("frame", "code"), [
    (b"\x8f\x80" + b"\x00" * 4, 1002),  # reserved opcode
    (b"\x81\x05hello", 1002),  # text frame without the client's mask
    (b"\x81\x82\x00\x00\x00\x00\xff\xfe", 1007),  # masked text that is not UTF-8
    (b"\x89\xfe\x01\x00" + b"\x00" * (4 + 256), 1002),  # a ping longer than 125 bytes
])
def test_malformed_websocket_frames_close_the_connection_cleanly(served, frame, code):
    _, server = served
    with _ws(server) as ws:
        ws.recv(timeout=10)
        ws.socket.sendall(frame)
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(5):
                ws.recv(timeout=10)
    sent = closed.value.rcvd
    assert sent is not None and sent.code == code, closed.value
    assert _get(server.port, "/healthz")[0] == 200


def test_a_viewer_vanishing_while_a_frame_is_sent_ends_its_sender_quietly():
    """A killed browser closes its socket while a frame is being written: the send fails
    with ConnectionClosed, which ends the viewer's sender; nothing to log as an error."""
    import asyncio

    from websockets.exceptions import ConnectionClosedError

    from trajstream.stream.livemap.server import _Viewer

    class Gone:
        async def send(self, data: bytes) -> None:
            raise ConnectionClosedError(None, None)

    hub = MapHub()
    hub.publish_fleet(_fleet(5))
    server = MapServer(hub, ServerConfig(port=0))  # not started: only the sender runs

    async def run() -> None:
        await asyncio.wait_for(server._send_frames(_Viewer(Gone())), 5.0)

    asyncio.run(run())
    assert server.counters["frames"] == 0


def test_the_hub_knows_when_no_viewer_can_take_a_frame(served):
    """Feeders skip their snapshots when nobody watches or every viewer is stalled."""
    hub, server = served
    assert hub.viewers == 0
    with _ws(server) as ws:
        ws.recv(timeout=10)
        hub.publish_fleet(_fleet(50, ts=T0 + 1))
        ws.recv(timeout=10)  # two frames unacknowledged: this viewer is stalled
        deadline = time.monotonic() + 10
        while hub.viewers and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hub.viewers == 0
        ws.send(orjson.dumps({"type": "ack", "seq": 1}).decode())
        while not hub.viewers and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hub.viewers == 1
    while hub.viewers and time.monotonic() < deadline:
        time.sleep(0.02)
    assert hub.viewers == 0
