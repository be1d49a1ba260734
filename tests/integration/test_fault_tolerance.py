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

from tests.integration.cli import cli_cmd, cli_env, read_topic, stacks, trajstream, wait_for_log
from trajstream.stream.kafka import create_topics

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
            "--metrics-port", "0", *extra]  # the product's group defaults: no tuning


def _alert_ids(recs: list[Any]) -> list[str]:
    return [orjson.loads(r.value)["alert_id"] for r in recs]


def _predictions(recs: list[Any]) -> dict[tuple[str, float], np.ndarray]:
    out = {}
    for r in recs:
        d = orjson.loads(r.value)
        out[(d["vehicle_id"], d["ts"])] = np.asarray(d["points"])
    return out


def _group_account(log: Path, first: int = 40, last: int = 30) -> str:
    """What kafka-python's group coordinator logged (at DEBUG): the first lines (did it send
    its JoinGroup, what came back) and the last (where it is now), each cut at 300 chars."""
    said = [line[:300] for line in log.read_text().splitlines() if "kafka.coordinator" in line]
    shown = said if len(said) <= first + last else [*said[:first], "...", *said[-last:]]
    return "the group coordinator's account:\n" + "\n".join(shown)


def _crash_run(bootstrap: str, args: list[str], kills: int, rng: random.Random,
               logs_dir: Path) -> list[str]:
    """Run, SIGKILL at random points ``kills`` times (each after some progress), then run to
    the end with --until-end. Returns the stderr of every run.

    kafka-python's group coordinator logs at DEBUG: the one hang seen here (a restart that
    never joined its group, not reproduced since) then fails with the client's own account."""
    logs = []
    level = "INFO,kafka.coordinator=DEBUG" if "kafka-python" in args else "INFO"
    for i in range(kills):
        log = logs_dir / f"run-{i}.log"
        with log.open("w") as err:
            proc = subprocess.Popen(cli_cmd(*args, log_level=level), env=cli_env(),
                                    stdout=subprocess.DEVNULL, stderr=err)
        try:
            # Wait until it has restored and processes (TF start-up, the dead member's session
            # expiry and the restore take a minute or more on a loaded two-core machine), then
            # a random moment. A kill before the restore would test nothing: fail instead,
            # with every thread's stack if it is still running (a silent hang).
            try:
                wait_for_log(log, "restored ", proc, 600)
            except AssertionError as exc:
                raise AssertionError(f"{exc}:\n{stacks(proc, log)}\n"
                                     f"{_group_account(log)}") from None
            time.sleep(rng.uniform(0.5, 2.5))
            if proc.poll() is not None:
                raise AssertionError("ended before the kill:\n" + log.read_text()[-3000:])
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            logs.append(log.read_text())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs.append(trajstream(*args, "--until-end", log_level="INFO").stderr)
    return logs


@pytest.mark.parametrize(
    "exactly_once, client",
    [(False, "confluent"), (True, "confluent"), (False, "kafka-python")],
    ids=["at-least-once", "exactly-once", "kafka-python"])
def test_sigkill_and_restart_gives_the_uninterrupted_alerts_and_predictions(
    kafka_bootstrap: str, new_topic: Callable[[str], str], traffic: Path, exactly_once: bool,
    client: str, tmp_path: Path,
):
    """3 SIGKILLs, each restart at once with the product's defaults (no client options):
    the restarted member resumes after the dead one's session expires (6 s)."""
    positions = new_topic("positions")
    _publish(kafka_bootstrap, traffic, positions)
    eos = ["--exactly-once"] if exactly_once else []
    eos += ["--kafka-client", client]
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
    logs = _crash_run(kafka_bootstrap, args, kills=3, rng=random.Random(5 + exactly_once),
                      logs_dir=tmp_path)
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
        # The stall limit is not under test here: a broker restart on a loaded two-core CI
        # machine can take a minute or more, so the limit only has to outlast the outage.
        args = ["process", "--bootstrap", b, "--positions-topic", "positions",
                "--alerts-topic", "alerts", "--group", "g", "--metrics-port", str(port),
                "--commit-interval-s", "0.3", "--max-batch-records", "100",
                "--max-stall-s", "300", "--until-end"]
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
            t_restart = time.monotonic()
            broker.start(wait_s=240)
            restart_s = time.monotonic() - t_restart
            _, err = proc.communicate(timeout=360)
            err = "".join(seen) + err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, f"broker restart took {restart_s:.0f} s\n{err[-3000:]}"
        got = _alert_ids(read_topic(b, "alerts"))
        print(f"\n[broker] {len(ref_ids)} reference alerts, {len(got)} delivered "
              f"({len(got) - len(set(got))} duplicates) across a broker restart")
        assert ref_ids <= set(got) and set(got) <= ref_ids
        assert "Kafka unavailable" in err or "kafka client" in err, err[-3000:]
    finally:
        broker.stop()


def _own_broker(data_dir: Path) -> Any:
    """A dedicated broker on free ports (the session's is never stopped)."""
    from tests.conftest import _load_broker_module

    if os.environ.get("TRAJSTREAM_TEST_BOOTSTRAP"):
        pytest.skip("external broker: no dedicated broker to stop")
    bm = _load_broker_module()
    return bm.start_broker(bm.free_port(), bm.free_port(), data_dir, wait_s=90)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_metric(port: int, name: str, at_least: float, proc: subprocess.Popen[Any],
                     timeout_s: float) -> None:
    """Until the processor's /metrics on ``port`` reports ``name`` >= ``at_least``."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"ended before {name} reached {at_least}"
        assert time.monotonic() < deadline, f"{name} below {at_least} after {timeout_s} s"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError):
            text = ""
        for line in text.splitlines():
            if line.startswith(name + " ") and float(line.split()[1]) >= at_least:
                return
        time.sleep(0.05)


def test_broker_gone_for_good_exits_nonzero_after_max_stall_s(
    tmp_path_factory: pytest.TempPathFactory, traffic: Path, tmp_path: Path
):
    """The broker never comes back: after --max-stall-s without progress the processor exits
    1 with one clear line (so an orchestrator restarts it), not before, and without a
    traceback. (That it rides out a shorter outage is the broker-restart test above.)

    The stall clock starts at the first failed operation, and a flush waits up to
    FLUSH_TIMEOUT_S (10 s) before it counts as failed: the exit comes max_stall_s plus up to
    two flush timeouts after the broker went away."""
    from trajstream.stream.app import FLUSH_TIMEOUT_S

    max_stall_s = 8.0
    broker = _own_broker(tmp_path_factory.mktemp("kb"))
    try:
        b = broker.bootstrap
        _publish(b, traffic, "positions")
        args = ["process", "--bootstrap", b, "--positions-topic", "positions",
                "--alerts-topic", "alerts", "--group", "g", "--metrics-port", "0",
                "--predictor", "cv", "--commit-interval-s", "0.3",
                "--max-batch-records", "100", "--max-stall-s", f"{max_stall_s:g}"]
        log_path = tmp_path / "process.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(cli_cmd(*args, log_level="INFO"), env=cli_env(),
                                    stdout=subprocess.DEVNULL, stderr=log_file, text=True)
        try:
            wait_for_log(log_path, "restored ", proc, 120)
            time.sleep(1.0)  # consume a little
            assert proc.poll() is None, log_path.read_text()[-3000:]
            t_down = time.monotonic()
            broker.stop()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise AssertionError("still running 60 s after the broker went away:\n"
                                     + stacks(proc, log_path)) from None
            took = time.monotonic() - t_down
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = log_path.read_text()
        print(f"\n[stall] broker gone: exit {proc.returncode} after {took:.1f} s "
              f"(--max-stall-s {max_stall_s:g})")
        assert proc.returncode == 1, err[-3000:]
        assert max_stall_s <= took <= max_stall_s + 2 * FLUSH_TIMEOUT_S + 15, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("trajstream: error: no progress for "), last
        assert f"--max-stall-s {max_stall_s:g}" in last, last
        assert "Traceback" not in err, err[-3000:]
    finally:
        broker.stop()


def test_a_broker_that_answers_but_refuses_every_commit_ends_the_run_after_max_stall_s(
    kafka_bootstrap: str, new_topic: Callable[[str], str], traffic: Path
):
    """The broker is up, but no commit gets through: a producer limit below the changelog's
    record size (message.max.bytes 5000: a shard of ~70 vehicles is ~50 kB) fails each one.
    Before: the consumer's pings, answered, restarted the stall clock ('Kafka unavailable
    ... no progress for 0 s', then 'Kafka available again' every second), so the run went
    on for good, committing nothing (a restart replays all of it) and counting no Kafka
    error."""
    positions = new_topic("positions")
    _publish(kafka_bootstrap, traffic, positions)
    max_stall_s = 5.0
    args = ["process", "--bootstrap", kafka_bootstrap, "--positions-topic", positions,
            "--alerts-topic", new_topic("alerts"), "--group", new_topic("group"),
            "--metrics-port", "0", "--predictor", "cv", "--max-stall-s", f"{max_stall_s:g}",
            "--producer-option", "message.max.bytes=5000"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cli_cmd(*args), env=cli_env(), capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"still running after 120 s:\n{str(exc.stderr)[-3000:]}"
                             ) from None
    took = time.monotonic() - t0
    print(f"\n[stall] commits refused: exit {proc.returncode} after {took:.1f} s")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert last.startswith("trajstream: error: no progress for "), last
    assert "MSG_SIZE_TOO_LARGE" in last and "Traceback" not in proc.stderr, last


SMALL = ["--vehicles", "60", "--duration", "30", "--seed", "11", "--reckless", "0.3"]


def test_rebalance_hands_partition_state_to_the_new_member(
    kafka_bootstrap: str, new_topic: Callable[[str], str], tmp_path: Path
):
    """Processor A runs alone on a 4-partition topic; B joins the group mid-stream, so A's
    partitions are revoked (A commits, drops their state) and split between the two (each
    restores its share from the changelog); both drain to the end.

    What must hold: every alert between two vehicles of the same partition (always one owner,
    state handed over through the changelog) equals the uninterrupted run's, none missing,
    none unexpected. Pairs across partitions are only seen together while one processor
    owns both (the single-stage pipeline; see docs/architecture.md), so after the
    split they may be missed: those alerts are only reported."""
    path = tmp_path / "positions.jsonl"
    trajstream("simulate", *SMALL, "--no-pace", "--out", str(path))
    positions = new_topic("positions")
    _publish(kafka_bootstrap, path, positions, partitions=4)
    part_of = {r.key.decode(): r.partition for r in read_topic(kafka_bootstrap, positions)}
    assert len(set(part_of.values())) == 4

    def pairs(topic: str) -> dict[str, tuple[str, str]]:
        out = {}
        for r in read_topic(kafka_bootstrap, topic):
            d = orjson.loads(r.value)
            out[d["alert_id"]] = (d["vehicle_a"], d["vehicle_b"])
        return out

    def same_partition(alerts: dict[str, tuple[str, str]]) -> set[str]:
        return {i for i, (a, b) in alerts.items() if part_of[a] == part_of[b]}

    ref_alerts = new_topic("ref-alerts")
    t0 = time.monotonic()
    trajstream("process", "--bootstrap", kafka_bootstrap, "--positions-topic", positions,
               "--alerts-topic", ref_alerts, "--group", new_topic("ref-group"),
               "--metrics-port", "0", "--until-end")
    ref_s = time.monotonic() - t0
    ref = pairs(ref_alerts)
    ref_same = same_partition(ref)
    assert len(ref_same) >= 3, f"too few same-partition alerts to compare: {len(ref_same)}"

    alerts = new_topic("alerts")
    metrics_port = {name: _free_port() for name in ("a", "b")}
    args = ["process", "--bootstrap", kafka_bootstrap, "--positions-topic", positions,
            "--alerts-topic", alerts, "--group", new_topic("group"),
            "--until-end",
            # small fetches: the partitions arrive interleaved, so A applies ticks (and has
            # state to hand over) early instead of waiting until it has seen every partition
            "--consumer-option", "max.partition.fetch.bytes=4096",
            # small batches, each committed: slow enough that B joins mid-stream
            "--commit-interval-s", "0", "--max-batch-records", "20"]
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
    procs: dict[str, subprocess.Popen[Any]] = {}
    try:
        for name in ("a", "b"):
            with logs[name].open("w") as log_file:
                procs[name] = subprocess.Popen(
                    cli_cmd(*args, "--metrics-port", str(metrics_port[name]),
                            log_level="INFO"),
                    env=cli_env(), stdout=subprocess.DEVNULL, stderr=log_file, text=True)
            if name == "a":
                # B joins once A holds vehicle state, so there is state to hand over however
                # fast or slow this machine runs A's first seconds.
                _wait_for_metric(metrics_port["a"], "trajstream_active_vehicles", 10,
                                 procs["a"], 120)
        for name, proc in procs.items():
            proc.wait(timeout=240)
            assert proc.returncode == 0, f"{name}:\n{logs[name].read_text()[-3000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log_a, log_b = logs["a"].read_text(), logs["b"].read_text()

    def numbers(log: str, word: str) -> list[int]:
        return [int(line.split(word)[1].split()[0]) for line in log.splitlines()
                if word in line]

    restored_b, consumed = numbers(log_b, "restored "), {
        name: numbers(log, "done: ") for name, log in (("a", log_a), ("b", log_b))}
    # The hand-over happened mid-stream: B took state over and both consumed records.
    assert restored_b and restored_b[0] > 0, log_b[-3000:]
    assert consumed["a"][0] > 0 and consumed["b"][0] > 0, consumed
    got = pairs(alerts)
    got_same = same_partition(got)
    missing, unexpected = ref_same - got_same, got_same - ref_same
    cross_missing = (set(ref) - ref_same) - set(got)
    print(f"\n[rebalance] reference run {ref_s:.1f} s, {len(ref)} alerts ({len(ref_same)} "
          f"same-partition); A+B: {len(got)} alerts, same-partition {len(missing)} missing "
          f"{len(unexpected)} unexpected; cross-partition {len(cross_missing)} missed, "
          f"{len(set(got) - set(ref))} not in the reference; B restored {restored_b}, "
          f"records consumed {consumed}")
    detail = {i: (ref.get(i) or got.get(i), part_of[(ref.get(i) or got[i])[0]])
              for i in missing | unexpected}
    assert not missing and not unexpected, (detail, log_a[-2000:], log_b[-2000:])


GARBAGE: list[bytes] = [
    b"{not json", b'{"vehicle_id": "veh-x", "ts": "soon", "x": 1, "y": 2}',
    b'{"vehicle_id": "veh-x", "ts": 1764547230.0, "x": NaN, "y": 2}', b"\xff\xfe\xfd",
    b'["an", "array"]', b'{"vehicle_id": "veh-x", "ts": 1764547230.0, "x": 1e12, "y": 2}',
    b"x" * 5000, b'{"vehicle_id": "veh-x", "ts": 1764547230.0, "y": 2}', b"",
    b'{"vehicle_id": "", "ts": 1764547230.0, "x": 1, "y": 2}', b"null", b"42",
    b'{"vehicle_id": "veh-x", "ts": 1e30, "x": 1, "y": 2}',
    b'{"vehicle_id": 7.5, "ts": 1764547230.0, "x": 1, "y": 2}',
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
    # The simulated traffic has late messages of its own (dropped and dead-lettered as
    # "late" in both runs); everything else in the dirty run's dead letters is the garbage.
    clean_letters = [orjson.loads(x) for x in outs["clean"][1]]
    timing = {"late", "future", "ahead"}
    letters = [orjson.loads(x) for x in outs["dirty"][1]]
    garbage = [d for d in letters if d["reason"] not in timing]
    reasons = {d["reason"] for d in garbage}
    print(f"\n[soak] {len(mixed)} messages, {bad} garbage: {len(garbage)} dead-lettered as "
          f"garbage, reasons {sorted(reasons)}; {len(clean_letters)} timing drops in the clean "
          f"run; {len(outs['clean'][0])} alerts in both runs")
    assert {d["reason"] for d in clean_letters} <= timing
    assert len(letters) - len(garbage) == len(clean_letters)
    assert len(garbage) == bad
    assert outs["dirty"][0] == outs["clean"][0] and outs["clean"][0]
    assert {"not_json", "wrong_type", "not_finite", "not_object", "out_of_range",
            "oversized", "missing_field"} <= reasons


def _twins(bootstrap: str, args: list[str], env: dict[str, str], logs: Path,
           timeout_s: float = 60.0) -> tuple[int, str]:
    """A live feed, a first processor and, once it processes, its twin (same ``args``, same
    ``env``): the first's exit code within ``timeout_s`` of the twin's start, and its log.
    The twin must still run then (it is the one that displaced the first)."""
    positions = args[args.index("--positions-topic") + 1]
    create_topics(bootstrap, [positions], partitions=2)
    feed = subprocess.Popen(cli_cmd("simulate", "--vehicles", "30", "--duration", "300",
                                    "--seed", "3", "--bootstrap", bootstrap, "--topic",
                                    positions), env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    procs = [feed]
    paths = [logs / "first.log", logs / "twin.log"]
    try:
        for path in paths:
            with path.open("w") as err:
                procs.append(subprocess.Popen(cli_cmd(*args, log_level="INFO"), env=env,
                                              stdout=subprocess.DEVNULL, stderr=err))
            if path is paths[0]:
                wait_for_log(path, "first record", procs[-1], 180)
        first, twin = procs[1], procs[2]
        try:
            code = first.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the first still runs {timeout_s:g} s after its twin "
                                 f"started:\n{paths[0].read_text()[-3000:]}") from None
        assert twin.poll() is None, f"the twin ended:\n{paths[1].read_text()[-3000:]}"
        return code, paths[0].read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _assert_fenced_exit(code: int, err: str, *options: str) -> None:
    """The fenced process exited 1 with one error line naming one of ``options``."""
    last = err.strip().splitlines()[-1]
    assert code == 1, err[-3000:]
    assert last.startswith("trajstream: error: ") and any(o in last for o in options), last
    assert "Traceback" not in err, err[-3000:]


def _processor(bootstrap: str, new_topic: Callable[[str], str], *extra: str) -> list[str]:
    """`process` with the product's defaults but fresh topics and group."""
    return ["process", "--bootstrap", bootstrap, "--positions-topic", new_topic("positions"),
            "--alerts-topic", new_topic("alerts"), "--group", new_topic("group"),
            "--metrics-port", "0", *extra]


def test_a_twin_with_the_same_instance_id_fences_the_first_which_exits_1_saying_so(
    kafka_bootstrap: str, new_topic: Callable[[str], str], kafka_client: str, tmp_path: Path
):
    """Two processors of one group on a host that exports HOSTNAME (the default
    --instance-id): the second takes the first's place, and the first must end with the
    reason, not run on without partitions."""
    args = _processor(kafka_bootstrap, new_topic, "--kafka-client", kafka_client)
    env = {**cli_env(), "HOSTNAME": "vm"}
    code, err = _twins(kafka_bootstrap, args, env, tmp_path)
    _assert_fenced_exit(code, err, "--instance-id")


def test_a_twin_with_the_same_transactional_id_fences_the_first_which_exits_1_saying_so(
    kafka_bootstrap: str, new_topic: Callable[[str], str], kafka_client: str, tmp_path: Path
):
    """Two --exactly-once processors of one group without an --instance-id share the
    default transactional id: the second's fences the first's producer, which must end with
    the reason, not retry a broker that answers."""
    args = _processor(kafka_bootstrap, new_topic, "--exactly-once", "--kafka-client",
                      kafka_client)
    env = {k: v for k, v in cli_env().items() if k != "HOSTNAME"}
    code, err = _twins(kafka_bootstrap, args, env, tmp_path)
    _assert_fenced_exit(code, err, "--transactional-id")


def test_exactly_once_twins_with_the_same_instance_id_fence_the_first_which_exits_1_saying_so(
    kafka_bootstrap: str, new_topic: Callable[[str], str], kafka_client: str, tmp_path: Path
):
    """Both ids collide at once (the transactional id follows the instance id): whichever
    fence the first learns of first, it ends naming the option to change."""
    args = _processor(kafka_bootstrap, new_topic, "--exactly-once", "--kafka-client",
                      kafka_client)
    env = {**cli_env(), "HOSTNAME": "vm"}
    code, err = _twins(kafka_bootstrap, args, env, tmp_path)
    _assert_fenced_exit(code, err, "--instance-id", "--transactional-id")
