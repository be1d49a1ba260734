"""The live map's cost to the processor, and whether a browser keeps up with 5,000 vehicles.

Part 1, ``overhead``: the processor drains 5,000 vehicles of 10 Hz traffic from a file (the
loop `trajstream process --input` runs, LSTM predictor, as fast as it can) in four set-ups,
interleaved round after round so that a busy machine weighs on all of them alike:

- ``none``: no map;
- ``map``: the map attached as in `trajstream demo` (snapshot tap, alerts sink, server);
- ``viewer``: plus one viewer in another process showing the whole fleet, acknowledging
  every frame (a browser that keeps up);
- ``stalled``: plus one viewer that connects, asks for the whole fleet and never reads.

Prints positions/s per set-up (median over rounds) and each one's ratio to ``none``.
Target: the map attached within 5% of none, and a stalled viewer no slower than ``map``.

Part 2, ``feed``: what `trajstream map` reads from Kafka for 5,000 vehicles at 10 Hz, a
position per vehicle and fix and a prediction (with the LSTM's sigma) per vehicle and tick:
both topics are filled with ``--seconds`` of traffic, then the map's feed drains them
(decode, fleet table, snapshots) as fast as it can. Prints messages/s against the traffic's
own rate (about 75,000/s).

Part 3, ``browser``: `trajstream demo --vehicles 5000` at real time (10 Hz per vehicle) with
the map, headless Chromium (Debian's /usr/bin/chromium through Playwright) showing the whole
fleet, then zoomed in. Prints the frames the page received and drew per second, its draw time
(median and 95th percentile), the frames it skipped and the server dropped, and the
demo's event-time lag: the page keeps up when it draws what it receives without its own
backlog.

Usage:
  python bench/bench_map.py [--part overhead|feed|browser|all] [--vehicles 5000] [--seconds 10]
      [--rounds 3] [--browser-seconds 30]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `trajstream` does, before numpy

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _kit import free_port, kafka_broker, parser, simulated_traffic  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
MODES = ("none", "map", "viewer", "stalled")


# -- part 1: overhead ------------------------------------------------------------------------


def _viewer_process(port: int, mode: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, "_viewer", "--port", str(port),
                             "--mode", mode], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "ready" once its first frame arrived
    assert line.strip() == b"ready", line
    return proc


def _viewer(port: int, mode: str) -> None:
    """A stand-in browser: whole-fleet view; acknowledges every frame, or never reads."""
    from websockets.sync.client import connect

    # max_queue=1: when stalled, the client stops reading the socket after one frame.
    with connect(f"ws://127.0.0.1:{port}/ws", max_queue=1, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "view", "x0": -5000, "y0": -5000, "x1": 5000, "y1": 5000,
                            "mpp": 2.0}))
        ws.recv(timeout=60)
        print("ready", flush=True)
        frames = 0
        if mode == "stalled":
            time.sleep(3600)
        while True:
            data = ws.recv(timeout=3600)
            head_len = int.from_bytes(data[4:8], "little")
            seq = json.loads(data[8:8 + head_len])["seq"]
            ws.send(json.dumps({"type": "ack", "seq": seq}))
            frames += 1


def _drain(path: Path, mode: str, predictor: Any) -> dict[str, Any]:
    from trajstream.stream.app import IO, Processor
    from trajstream.stream.config import ProcessorConfig
    from trajstream.stream.livemap import MapHub, MapServer, ProcessorTap, ServerConfig
    from trajstream.stream.metrics import Metrics
    from trajstream.stream.sinks import Delivery, MemorySink, Output
    from trajstream.stream.sources import FileSource

    cfg = ProcessorConfig(source="file", input_path=str(path), alerts_out="-",
                          predictor=predictor.name)
    alerts = MemorySink()
    server = viewer = tap = None
    if mode != "none":
        hub = MapHub()
        server = MapServer(hub, ServerConfig(port=0)).start()
        tap = ProcessorTap(hub)
        if mode in ("viewer", "stalled"):
            hub.publish_fleet(_placeholder())  # so the viewer gets its first frame now
            viewer = _viewer_process(server.port, "active" if mode == "viewer" else "stalled")
    tap_s = [0.0]
    observers: tuple[Any, ...] = ()
    if tap is not None:
        def timed_tap(engine: Any, _tap: Any = tap) -> None:
            t = time.perf_counter()
            _tap(engine)
            tap_s[0] += time.perf_counter() - t

        observers = (timed_tap,)
    outputs = [Output("alerts", alerts)]
    if tap is not None:
        outputs.append(Output("alerts", tap, Delivery.BEST_EFFORT))
    io = IO(FileSource(str(path)), outputs)
    proc = Processor(cfg, io, predictor, Metrics(), observers=observers)
    server_clock = (time.pthread_getcpuclockid(server._thread.ident)  # type: ignore[union-attr]
                    if server is not None else None)
    server_cpu0 = time.clock_gettime(server_clock) if server_clock is not None else 0.0
    cpu0 = time.thread_time()
    try:
        summary = proc.run()
        end = time.monotonic()
    finally:
        cpu = time.thread_time() - cpu0
        server_cpu = (time.clock_gettime(server_clock) - server_cpu0
                      if server_clock is not None else 0.0)
        frames = server.counters["frames"] if server is not None else 0
        if viewer is not None:
            viewer.kill()
            viewer.wait()
        if server is not None:
            server.stop()
    assert proc.first_record_at is not None
    elapsed = end - proc.first_record_at
    return {"rate": summary["consumed"] / elapsed, "cpu_rate": summary["consumed"] / cpu,
            "records": summary["consumed"], "frames": frames, "elapsed_s": elapsed,
            # the map's own work (the snapshots on the processor's thread, the server's
            # thread, which holds the GIL while it works) per wall second: the share of a core
            # it takes from a processor running flat out, whatever the machine's load does
            # to the processor's own pace
            "map_share": (tap_s[0] + server_cpu) / elapsed}


def _placeholder() -> Any:
    import numpy as np

    from trajstream.stream.livemap.frames import FleetSnapshot

    one = np.zeros(1)
    return FleetSnapshot(ts=0.0, ids=np.array(["-"], dtype=object), x=one, y=one, heading=one,
                         length=one, width=one, paths=np.zeros((1, 20, 2)))


def overhead(vehicles: int, seconds: float, rounds: int, seed: int) -> None:
    from trajstream.model import load_predictor
    from trajstream.model.predictors import PathSpec

    path = simulated_traffic(vehicles, seconds, seed)
    predictor = load_predictor("lstm", PathSpec())
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    _drain(path, "none", predictor)  # warm-up: page cache, allocations
    for r in range(rounds):
        order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
        for mode in order:
            res = _drain(path, mode, predictor)
            results[mode].append(res)
            print(f"  round {r + 1} {mode:8s} {res['rate']:>9,.0f} positions/s "
                  f"({res['cpu_rate']:>9,.0f} per processor-thread CPU s, "
                  f"{res['frames']} frames sent, map work {1000 * res['map_share']:.1f} ms "
                  f"per s)", flush=True)
    base = statistics.median(x["rate"] for x in results["none"])
    base_cpu = statistics.median(x["cpu_rate"] for x in results["none"])
    print(f"\nprocessor draining {vehicles:,} vehicles x {seconds:g} s of 10 Hz traffic "
          f"(LSTM, file source), median of {rounds} interleaved rounds, {os.cpu_count()} CPUs")
    print(f"{'set-up':>8} {'positions/s':>12} {'vs none':>8} {'per thread-CPU s':>17} "
          f"{'vs none':>8} {'map ms/s':>9}")
    ratios, shares = {}, {}
    for mode in MODES:
        rate = statistics.median(x["rate"] for x in results[mode])
        cpu = statistics.median(x["cpu_rate"] for x in results[mode])
        shares[mode] = statistics.median(x["map_share"] for x in results[mode])
        ratios[mode] = rate / base
        print(f"{mode:>8} {rate:>12,.0f} {rate / base:>8.3f} {cpu:>17,.0f} {cpu / base_cpu:>8.3f} "
              f"{1000 * shares[mode]:>9.1f}")
    verdict = "meets" if ratios["map"] >= 0.95 and ratios["viewer"] >= 0.95 else "MISSES"
    print(f"target: map attached within 5% of none: {verdict} by wall-clock throughput (map "
          f"{ratios['map']:.3f}, with a viewer {ratios['viewer']:.3f}); stalled viewer vs map: "
          f"{ratios['stalled'] / ratios['map']:.3f}")
    print(f"map work accounted directly (snapshots + server thread CPU per wall second, i.e. "
          f"the share of the processor's core it can take): {100 * shares['map']:.1f}% "
          f"attached, {100 * shares['viewer']:.1f}% with a viewer, "
          f"{100 * shares['stalled']:.1f}% with a stalled one "
          f"({'within' if max(shares.values()) <= 0.05 else 'OVER'} 5%)")


# -- part 2: the Kafka feed of trajstream map ------------------------------------------------


def feed(vehicles: int, seconds: float, seed: int) -> None:
    import threading
    import uuid

    import orjson

    from trajstream.model import load_predictor
    from trajstream.model.predictors import PathSpec
    from trajstream.stream.codec import CodecConfig, decode_batch
    from trajstream.stream.config import EngineConfig
    from trajstream.stream.engine import Engine
    from trajstream.stream.kafka import create_topics, make_producer
    from trajstream.stream.livemap import MapHub
    from trajstream.stream.livemap.kafka_feed import FeedConfig, KafkaFeed

    path = simulated_traffic(vehicles, seconds, seed)
    with kafka_broker() as bootstrap:
        run = uuid.uuid4().hex[:8]
        topics = {k: f"bench-map-{k}-{run}" for k in ("positions", "predictions", "alerts")}
        create_topics(bootstrap, list(topics.values()), partitions=6)
        producer = make_producer(bootstrap, client="confluent")
        engine = Engine(EngineConfig(emit_predictions=True),
                        load_predictor("lstm", PathSpec()))
        n_pos = n_pred = 0
        with path.open("rb") as f:
            lines = [ln.rstrip(b"\n") for ln in f]
        for i in range(0, len(lines), 5000):
            chunk = lines[i:i + 5000]
            for v in chunk:
                producer.send(topics["positions"], v, orjson.loads(v)["vehicle_id"].encode())
            n_pos += len(chunk)
            batch, _ = decode_batch(None, chunk, CodecConfig())
            for k, v in engine.process(batch).predictions:
                producer.send(topics["predictions"], v, k)
                n_pred += 1
        producer.flush(120.0)
        producer.close()
        print(f"  filled {n_pos:,} positions and {n_pred:,} predictions", flush=True)
        hub = MapHub()
        cfg = FeedConfig(bootstrap=bootstrap, positions_topic=topics["positions"],
                         predictions_topic=topics["predictions"],
                         alerts_topic=topics["alerts"],
                         kafka_config={"auto.offset.reset": "earliest"})
        feed_ = KafkaFeed(hub, cfg)
        stop = threading.Event()
        total = n_pos + n_pred
        t = threading.Thread(target=feed_.run, args=(stop,), daemon=True)
        t0 = cpu0 = None
        t.start()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = feed_.counts["positions"] + feed_.counts["predictions"]
            if t0 is None and done:
                t0, cpu0 = time.monotonic(), time.process_time()
            if done >= total:
                break
            time.sleep(0.05)
        elapsed, cpu = time.monotonic() - (t0 or 0), time.process_time() - (cpu0 or 0)
        stop.set()
        t.join(30)
        snap = hub.state().fleet
        print(f"\ntrajstream map's Kafka feed draining {vehicles:,} vehicles x {seconds:g} s "
              f"(positions + LSTM predictions with sigma, confluent-kafka)")
        print(f"  {done:,} messages in {elapsed:.1f} s: {done / elapsed:,.0f} messages/s "
              f"({done / cpu:,.0f} per CPU s); fleet of {len(snap):,} vehicles; "
              f"{feed_.table.ignored_predictions} predictions ignored")
        need = total / seconds  # live: the traffic's own message rate
        print(f"  keeping up live with {vehicles:,} vehicles at 10 Hz needs {need:,.0f} "
              f"messages/s: {done / elapsed / need:.1f}x that here, "
              f"{done / cpu / need:.1f}x per CPU second")


# -- part 3: a browser at 5,000 vehicles --------------------------------------------------------


def browser(vehicles: int, seconds: float) -> None:
    from playwright.sync_api import sync_playwright

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "trajstream", "--log-level", "WARNING", "demo", "--vehicles",
         str(vehicles), "--duration", str(seconds + 60), "--metrics-port", "0", "--map-port",
         str(port)], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert demo.poll() is None and time.monotonic() < deadline, "demo not serving"
            time.sleep(0.5)
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = b.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function(f"() => window.trajstreamMap.totalVehicles >= {vehicles * 0.9}",
                                   timeout=120_000)
            for label, setup in (("whole fleet", "() => window.trajstreamMap.fit()"),
                                 ("zoomed in", "() => { const s = window.trajstreamMap;"
                                  " const v = s.view; s.centreOn((v.x0 + v.x1) / 2,"
                                  " (v.y0 + v.y1) / 2, 4); }")):
                page.evaluate(setup)
                time.sleep(2.0)
                _measure(page, label, seconds / 2)
            b.close()
    finally:
        demo.terminate()
        demo.wait(30)


def _measure(page: Any, label: str, seconds: float) -> None:
    read = ("() => { const s = window.trajstreamMap; return {frames: s.frames, draws: s.draws,"
            " skipped: s.skipped, ms: s.renderMs, drawn: s.drawnVehicles,"
            " total: s.totalVehicles}; }")
    first = page.evaluate(read)
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(0.25)
        samples.append(page.evaluate(read)["ms"])
    last = page.evaluate(read)
    stats = page.evaluate("() => document.querySelector('#stats').innerText")
    elapsed = time.monotonic() - t0
    frames = last["frames"] - first["frames"]
    skipped = last["skipped"] - first["skipped"]
    samples.sort()
    p50 = samples[len(samples) // 2]
    p95 = samples[int(0.95 * (len(samples) - 1))]
    print(f"  {label:11s}: {last['drawn']:,} of {last['total']:,} vehicles drawn; "
          f"{frames / elapsed:.1f} frames/s received, {skipped} skipped by the page; "
          f"draw {p50:.0f} ms median, {p95:.0f} ms p95", flush=True)
    for line in stats.splitlines():
        if line.startswith(("Event-time lag", "Frames", "Positions")):
            print(f"      {line}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_viewer":
        ap = argparse.ArgumentParser()
        ap.add_argument("_viewer", help="internal: run as the stand-in viewer process")
        ap.add_argument("--port", type=int, required=True,
                        help="port of the map server to connect to")
        ap.add_argument("--mode", required=True,
                        help="'stalled': never read after the first frame; anything else: "
                        "acknowledge every frame")
        a = ap.parse_args()
        _viewer(a.port, a.mode)
        return
    ap = parser(__doc__)
    ap.add_argument("--part", choices=["overhead", "feed", "browser", "all"], default="all",
                    help="which part to run: overhead (processor with and without the map), feed "
                    "(the map's Kafka feed), browser (headless Chromium), or all three")
    ap.add_argument("--vehicles", type=int, default=5000, help="fleet size (every part)")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="seconds of simulated 10 Hz traffic drained by the overhead and feed "
                    "parts")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds of the overhead part; the median is reported")
    ap.add_argument("--seed", type=int, default=3,
                    help="seed of the simulated traffic (overhead and feed parts)")
    ap.add_argument("--browser-seconds", type=float, default=30.0,
                    help="measured seconds of the browser part, split between the whole-fleet "
                    "and zoomed-in views")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.part in ("overhead", "all"):
        print("== processor with and without the live map", flush=True)
        overhead(args.vehicles, args.seconds, args.rounds, args.seed)
    if args.part in ("feed", "all"):
        print("\n== trajstream map reading Kafka", flush=True)
        feed(args.vehicles, args.seconds, args.seed)
    if args.part in ("browser", "all"):
        print(f"\n== headless Chromium, {args.vehicles:,} vehicles at 10 Hz (trajstream demo)",
              flush=True)
        browser(args.vehicles, args.browser_seconds)


if __name__ == "__main__":
    main()
