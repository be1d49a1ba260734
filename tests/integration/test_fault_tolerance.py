"""Crashes, restarts, broker loss and garbage on the real broker.

The crash test SIGKILLs `trajstream process` at random points and restarts it; the alerts
(by ``alert_id``) and per-vehicle predictions must equal an uninterrupted run's. The broker
test stops and restarts a dedicated broker mid-stream. Small traffic keeps this file to a
few minutes on 2 cores.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from stream.kafka import create_topics
from tests.integration.cli import cli_cmd, cli_env, read_topic, trajstream

pytestmark = pytest.mark.slow

SIM = ["--vehicles", "70", "--duration", "45", "--seed", "11", "--reckless", "0.3"]


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ft")
    trajstream("simulate", *SIM, "--no-pace", "--out", str(d / "positions.jsonl"),
               "--truth", str(d / "truth.jsonl"))
    return d / "positions.jsonl"


def _publish(bootstrap: str, path: Path, topic: str, partitions: int = 1) -> int:
    create_topics(bootstrap, [topic], partitions=partitions)
    trajstream("replay", str(path), "--bootstrap", bootstrap, "--topic", topic, "--no-pace")
    return sum(1 for _ in path.open("rb"))


def _process_args(bootstrap: str, positions: str, alerts: str, preds: str, group: str,
                  *extra: str) -> list[str]:
    return ["process", "--bootstrap", bootstrap, "--positions-topic", positions,
            "--alerts-topic", alerts, "--predictions-topic", preds, "--group", group,
            "--metrics-port", "0", "--kafka-option", "session.timeout.ms=6000", *extra]


def _alert_ids(recs: list[Any]) -> list[str]:
    return [orjson.loads(r.value)["alert_id"] for r in recs]


def _predictions(recs: list[Any]) -> dict[tuple[str, float], np.ndarray]:
    out = {}
    for r in recs:
        d = orjson.loads(r.value)
        out[(d["vehicle_id"], d["ts"])] = np.asarray(d["points"])
    return out


def _crash_run(bootstrap: str, args: list[str], kills: int, rng: random.Random) -> list[str]:
    """Run, SIGKILL at random points ``kills`` times (each after some progress), then run to
    the end with --until-end. Returns the stderr of every run."""
    logs = []
    for _ in range(kills):
        proc = subprocess.Popen(cli_cmd(*args, log_level="INFO"), env=cli_env(),
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            # Wait until it processes (TF start-up takes a few seconds), then a random moment.
            deadline = time.monotonic() + 120
            assert proc.stderr is not None
            seen = []
            for line in proc.stderr:
                seen.append(line)
                if "restored " in line or time.monotonic() > deadline:
                    break
            time.sleep(rng.uniform(0.5, 2.5))
            if proc.poll() is not None:
                raise AssertionError("ended before the kill:\n" + "".join(seen)
                                     + proc.communicate()[1][-3000:])
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=30)
            logs.append("".join(seen) + err)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs.append(trajstream(*args, "--until-end").stderr)
    return logs


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_sigkill_and_restart_gives_the_uninterrupted_alerts_and_predictions(
    kafka_bootstrap: str, new_topic: Callable[[str], str], traffic: Path, exactly_once: bool
):
    positions = new_topic("positions")
    _publish(kafka_bootstrap, traffic, positions)
    eos = ["--exactly-once"] if exactly_once else []
    # The reference: one uninterrupted run on the same records.
    ref_alerts, ref_preds = new_topic("ref-alerts"), new_topic("ref-preds")
    trajstream(*_process_args(kafka_bootstrap, positions, ref_alerts, ref_preds,
                              new_topic("ref-group"), "--until-end"))
    ref_ids = _alert_ids(read_topic(kafka_bootstrap, ref_alerts))
    assert len(ref_ids) >= 5 and len(set(ref_ids)) == len(ref_ids)
    ref_p = _predictions(read_topic(kafka_bootstrap, ref_preds))

    alerts, preds = new_topic("alerts"), new_topic("preds")
    args = _process_args(kafka_bootstrap, positions, alerts, preds, new_topic("group"),
                         "--commit-interval-s", "0.3", "--max-batch-records", "200", *eos)
    logs = _crash_run(kafka_bootstrap, args, kills=3, rng=random.Random(5 + exactly_once))
    restored = [int(line.split("restored ")[1].split()[0]) for log in logs
                for line in log.splitlines() if "restored " in line]
    print(f"\n[crash] vehicle states restored at each start: {restored}")
    # every restart resumed mid-stream: the kills hit while records were being processed
    assert len(restored) == 4 and restored[0] == 0 and min(restored[1:]) > 0
    final = [line for line in logs[-1].splitlines() if "done:" in line]
    assert final and " 0 records" not in final[0], final
    got = read_topic(kafka_bootstrap, alerts, read_committed=exactly_once)
    ids = _alert_ids(got)
    missing, unexpected = set(ref_ids) - set(ids), set(ids) - set(ref_ids)
    print(f"\n[crash] {len(ref_ids)} reference alerts; after 3 SIGKILLs {len(ids)} delivered "
          f"({len(ids) - len(set(ids))} duplicates), {len(missing)} missing, "
          f"{len(unexpected)} unexpected")
    assert not missing and not unexpected, logs[-1][-3000:]
    if exactly_once:
        assert len(ids) == len(set(ids)), "duplicate alerts under --exactly-once"
    # Every prediction made (also replays) equals the uninterrupted run's for that fix.
    got_p = _predictions(read_topic(kafka_bootstrap, preds, read_committed=exactly_once))
    assert set(got_p) == set(ref_p)
    worst = max(float(np.abs(got_p[k] - ref_p[k]).max()) for k in ref_p)
    print(f"[crash] {len(ref_p)} predictions, largest difference {worst:.2e} m")
    assert worst <= 1e-5


def test_broker_stop_and_restart_mid_stream_loses_no_alert(
    tmp_path_factory: pytest.TempPathFactory, traffic: Path, tmp_path: Path
):
    """A dedicated broker (the session's stays up) is stopped mid-stream and restarted; the
    processor retries, resumes and every reference alert arrives."""
    import socket

    from tests.conftest import _load_broker_module

    if os.environ.get("TRAJSTREAM_TEST_BOOTSTRAP"):
        pytest.skip("external broker: no dedicated broker to stop")
    bm = _load_broker_module()
    broker = bm.start_broker(bm.free_port(), bm.free_port(), tmp_path_factory.mktemp("kb"),
                             wait_s=90)
    try:
        b = broker.bootstrap
        _publish(b, traffic, "positions")
        ref = tmp_path / "ref.jsonl"
        trajstream("process", "--input", str(traffic), "--alerts-out", str(ref),
                   "--metrics-port", "0")
        ref_ids = {orjson.loads(x)["alert_id"] for x in ref.read_bytes().splitlines()}
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        args = ["process", "--bootstrap", b, "--positions-topic", "positions",
                "--alerts-topic", "alerts", "--group", "g", "--metrics-port", str(port),
                "--commit-interval-s", "0.3", "--max-batch-records", "100",
                "--max-stall-s", "90", "--until-end"]
        proc = subprocess.Popen(cli_cmd(*args, log_level="INFO"), env=cli_env(),
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            seen = []
            for line in proc.stderr:
                seen.append(line)
                if "restored " in line:
                    break
            time.sleep(1.0)
            assert proc.poll() is None, "".join(seen)
            broker.stop()
            time.sleep(4.0)
            assert proc.poll() is None, "the processor died with the broker"
            broker.start(wait_s=90)
            _, err = proc.communicate(timeout=240)
            err = "".join(seen) + err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err[-3000:]
        got = _alert_ids(read_topic(b, "alerts"))
        print(f"\n[broker] {len(ref_ids)} reference alerts, {len(got)} delivered "
              f"({len(got) - len(set(got))} duplicates) across a broker restart")
        assert ref_ids <= set(got) and set(got) <= ref_ids
        assert "Kafka unavailable" in err or "kafka client" in err, err[-3000:]
    finally:
        broker.stop()


GARBAGE: list[bytes] = [
    b"{not json", b'{"vehicle_id": "veh-x", "ts": "soon", "x": 1, "y": 2}',
    b'{"vehicle_id": "veh-x", "ts": 1764547230.0, "x": NaN, "y": 2}', b"\xff\xfe\xfd",
    b'["an", "array"]', b'{"vehicle_id": "veh-x", "ts": 1764547230.0, "x": 1e12, "y": 2}',
    b"x" * 5000, b'{"vehicle_id": "veh-x", "ts": 1764547230.0, "y": 2}', b"",
    b'{"vehicle_id": "", "ts": 1764547230.0, "x": 1, "y": 2}', b"null", b"42",
    b'{"vehicle_id": "veh-x", "ts": 1e30, "x": 1, "y": 2}',
    b'{"vehicle_id": 7, "ts": 1764547230.0, "x": 1, "y": 2}',
    b'{"vehicle_id": "veh-x", "ts": 1764547230.0, "x": 1, "y": 2, "speed": -5}',
]


def test_bad_input_soak_100k_messages(traffic: Path, tmp_path: Path):
    """100k lines, 10% garbage of every kind interleaved: no crash, every bad line counted
    and dead-lettered, and the valid traffic's alerts identical to a clean run (file path,
    cv predictor: fast; the Kafka-key reasons empty_key/key_mismatch are covered by
    test_process_e2e's bad-input test)."""
    rng = random.Random(3)
    valid = []
    while len(valid) < 90_000:  # the simulated run, repeated later in event time
        shift = 60.0 * (len(valid) // 31_000)
        for line in traffic.read_bytes().splitlines():
            d = orjson.loads(line)
            d["ts"] = round(d["ts"] + shift, 3)
            valid.append(orjson.dumps(d))
    valid = valid[:90_000]
    mixed: list[bytes] = []
    bad = 0
    for line in valid:
        mixed.append(line)
        if rng.random() < 1 / 9:
            g = GARBAGE[bad % len(GARBAGE)]
            mixed.append(g.replace(b"\n", b" ") if g else b"{}")
            bad += 1
    while len(mixed) < 100_000:
        mixed.append(GARBAGE[bad % len(GARBAGE)] or b"{}")
        bad += 1
    clean_in, dirty_in = tmp_path / "clean.jsonl", tmp_path / "dirty.jsonl"
    clean_in.write_bytes(b"\n".join(valid) + b"\n")
    dirty_in.write_bytes(b"\n".join(mixed) + b"\n")
    outs = {}
    for name, path in (("clean", clean_in), ("dirty", dirty_in)):
        out, dlq = tmp_path / f"{name}-alerts.jsonl", tmp_path / f"{name}-dlq.jsonl"
        trajstream("process", "--input", str(path), "--alerts-out", str(out), "--dlq-out",
                   str(dlq), "--predictor", "cv", "--metrics-port", "0")
        outs[name] = (out.read_bytes().splitlines(), dlq.read_bytes().splitlines())
    letters = [orjson.loads(x) for x in outs["dirty"][1]]
    reasons = {d["reason"] for d in letters}
    print(f"\n[soak] {len(mixed)} messages, {bad} garbage: {len(letters)} dead-lettered, "
          f"reasons {sorted(reasons)}; {len(outs['clean'][0])} alerts in both runs")
    assert not outs["clean"][1]
    assert len(letters) == bad
    assert outs["dirty"][0] == outs["clean"][0] and outs["clean"][0]
    assert {"not_json", "wrong_type", "not_finite", "not_object", "out_of_range",
            "oversized", "missing_field"} <= reasons

