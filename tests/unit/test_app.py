"""The micro-batch loop over file and memory sources; config validation; the process CLI."""

from __future__ import annotations

import logging
import queue
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from trajstream.errors import ConfigError, TrajstreamError
from trajstream.model.predictors import ConstantVelocity, PathSpec
from trajstream.stream.app import IO, Processor, build_io
from trajstream.stream.config import EngineConfig, ProcessorConfig
from trajstream.stream.metrics import Metrics
from trajstream.stream.sinks import Delivery, MemorySink, Output
from trajstream.stream.sources import END, FileSource, MemorySource

sys.path.insert(0, str(Path(__file__).parent))
from test_engine import crossing_traffic, run  # noqa: E402

BAD = [
    b"not json at all",
    b'{"vehicle_id": "x", "ts": "yesterday", "x": 1, "y": 2}',
    b'{"vehicle_id": "x", "ts": 1764081000.0, "x": NaN, "y": 2}',
    b"[1, 2, 3]",
    b'{"vehicle_id": "", "ts": 1764081000.0, "x": 1, "y": 2}',
    b"\xff\xfe\x00garbage",
    b'{"ts": 1764081000.0, "x": 1, "y": 2}',
]


def _write(path: Path, values: list[bytes]) -> None:
    path.write_bytes(b"\n".join(values) + b"\n")


def _file_run(tmp_path: Path, values: list[bytes], **kw) -> tuple[list[bytes], dict, Path]:
    src = tmp_path / "positions.jsonl"
    _write(src, values)
    cfg = ProcessorConfig(source="file", input_path=str(src),
                          alerts_out=str(tmp_path / "alerts.jsonl"),
                          dlq_out=str(tmp_path / "dlq.jsonl"), predictor="cv", **kw)
    proc = Processor(cfg, build_io(cfg), ConstantVelocity(PathSpec()), Metrics())
    summary = proc.run()
    lines = (tmp_path / "alerts.jsonl").read_bytes().splitlines()
    return lines, summary, tmp_path / "dlq.jsonl"


def test_file_path_equals_the_engine_and_batch_size_does_not_matter(tmp_path: Path):
    values = crossing_traffic(seed=5, disorder_s=0.2, duplicates=0.02)
    expected = [v for _, v in run(values, None)[0]]
    assert expected
    for n in (3, 17, 4096):
        lines, summary, _ = _file_run(tmp_path, values, max_batch_records=n)
        assert lines == expected
        assert summary["consumed"] == len(values)


def test_bad_input_is_counted_dead_lettered_and_changes_nothing_else(tmp_path: Path):
    values = crossing_traffic(seed=2, disorder_s=0.1)
    good, _, _ = _file_run(tmp_path, values, max_batch_records=100)
    mixed: list[bytes] = []
    for i, v in enumerate(values):
        mixed.append(v)
        if i % 50 == 0:
            mixed.append(BAD[(i // 50) % len(BAD)])
    n_bad = len(mixed) - len(values)
    lines, summary, dlq = _file_run(tmp_path, mixed, max_batch_records=100)
    assert lines == good
    assert summary["rejected"] == n_bad
    letters = [orjson.loads(x) for x in dlq.read_bytes().splitlines()]
    assert len(letters) == n_bad
    assert {d["reason"] for d in letters} >= {"not_json", "wrong_type", "not_finite",
                                              "not_object", "missing_field"}


def test_blank_lines_are_skipped_and_empty_file_works(tmp_path: Path):
    one = b'{"vehicle_id": "a", "ts": 1764081000.0, "x": 0, "y": 0}'
    lines, summary, _ = _file_run(tmp_path, [b"", b"  ", one])
    assert lines == [] and summary["rejected"] == 1  # whitespace-only line is not JSON
    assert summary["accepted"] == 1
    src = FileSource(str(tmp_path / "positions.jsonl"))
    assert len(src.poll(10)) == 2 and src.exhausted
    # nothing but the whitespace: not one record used, a failed run
    with pytest.raises(TrajstreamError, match=r"none of the 1 records was accepted \(not_json"):
        _file_run(tmp_path, [b"", b"  "])


def _cv_processor(q: queue.Queue, metrics: Metrics, **config: Any) -> Processor:
    """A constant-velocity processor reading ``q``, its alerts to memory."""
    cfg = ProcessorConfig(source="memory", predictor="cv", **config)
    return Processor(cfg, IO(MemorySource(q), [Output("alerts", MemorySink())]),
                     ConstantVelocity(PathSpec()), metrics)


def test_the_event_time_lag_grows_while_the_producers_are_silent():
    """The lag alert's cue: with no records, the gauge keeps counting from the newest
    event time applied instead of holding the last batch's value."""
    import time

    q: queue.Queue = queue.Queue()
    q.put([(None, v) for v in crossing_traffic(seed=1)])
    metrics = Metrics()
    proc = _cv_processor(q, metrics, max_batch_wait_ms=20)
    lag = metrics.event_time_lag._value
    runner = threading.Thread(target=proc.run)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while (proc.records == 0 or not q.empty()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(10):  # a window in which no tick was applied (a loaded machine
            newest = proc.engine.newest_applied_ts  # may still be applying the last one)
            first = lag.get()
            time.sleep(1.0)  # nothing comes
            if proc.engine.newest_applied_ts == newest:
                break
        assert lag.get() >= first + 0.8
    finally:
        q.put(END)
        runner.join(timeout=60)


def test_the_event_time_lag_is_nan_while_no_event_time_is_held():
    """Before the first record (and after losing every partition) there is no lag: not a
    healthy 0 on a stack that never got input, nor a frozen value of partitions now gone."""
    import math
    import time

    q: queue.Queue = queue.Queue()
    metrics = Metrics()
    proc = _cv_processor(q, metrics, max_batch_wait_ms=20)
    runner = threading.Thread(target=proc.run)
    runner.start()
    try:
        time.sleep(0.5)
        assert math.isnan(metrics.event_time_lag._value.get())
    finally:
        q.put(END)
        runner.join(timeout=60)


def test_batch_latency_is_the_batch_not_the_wait_for_its_first_record():
    """trajstream_batch_seconds (the p99 objective of the dashboard and the alert rule) is
    decode to outputs; a poll waiting for input is idle, not a slow batch."""
    import time

    q: queue.Queue = queue.Queue()
    metrics = Metrics()
    proc = _cv_processor(q, metrics, max_batch_wait_ms=10_000)
    values = crossing_traffic(seed=1)[:40]

    def feed() -> None:
        time.sleep(2.0)  # the poll waits this long for its first record
        q.put([(None, v) for v in values])
        q.put(END)

    feeder = threading.Thread(target=feed)
    feeder.start()
    proc.run()
    feeder.join()
    batch = metrics.batch_seconds
    assert proc.batches == 1
    assert batch._sum.get() < 1.0, f"{batch._sum.get():.2f} s: the 2 s wait was counted"
    assert metrics.processing_seconds._sum.get() < 40 * 1.0


def test_the_status_line_gives_the_rate_since_the_previous_one(caplog):
    """After hours at thousands a second, input that stopped must read 0/s, not the run's
    average slowly falling."""
    cfg = ProcessorConfig(source="memory", predictor="cv")
    proc = Processor(cfg, IO(MemorySource(queue.Queue()), [Output("alerts", MemorySink())]),
                     ConstantVelocity(PathSpec()))
    caplog.set_level("INFO", logger="trajstream.stream.app")
    proc.records = 150_000
    proc._status(30.0)
    proc._status(60.0)  # nothing came meanwhile
    proc.records = 180_000
    proc._status(90.0)
    rates = [r.getMessage().split("(")[1].split(")")[0] for r in caplog.records
             if "records (" in r.getMessage()]
    assert rates == ["5000/s", "0/s", "1000/s"]


def test_memory_source_and_stop_event():
    values = crossing_traffic(seed=1)
    q: queue.Queue = queue.Queue()
    for i in range(0, len(values), 97):
        q.put([(None, v) for v in values[i: i + 97]])
    q.put(END)
    sink = MemorySink()
    cfg = ProcessorConfig(source="memory", predictor="cv", max_batch_records=50)
    proc = Processor(cfg, IO(MemorySource(q), [Output("alerts", sink)]),
                     ConstantVelocity(PathSpec()))
    summary = proc.run()
    assert [v for _, v in sink.messages] == [v for _, v in run(values, None)[0]]
    assert summary["consumed"] == len(values)
    # a set stop event ends the loop without waiting for input
    stop = threading.Event()
    stop.set()
    idle = Processor(cfg, IO(MemorySource(queue.Queue()), [Output("alerts", MemorySink())]),
                     ConstantVelocity(PathSpec()))
    assert idle.run(stop)["consumed"] == 0


class _Broken(MemorySink):
    """A sink that takes messages but cannot flush (a viewer gone, a disk full)."""

    def flush(self) -> None:
        raise OSError("cannot flush")


def _memory_run(outputs: list[Output]) -> dict:
    q: queue.Queue = queue.Queue()
    values = crossing_traffic(seed=1)
    q.put([(None, v) for v in values])
    q.put(END)
    cfg = ProcessorConfig(source="memory", predictor="cv", commit_interval_s=0.0)
    return Processor(cfg, IO(MemorySource(q), outputs), ConstantVelocity(PathSpec())).run()


def test_outputs_by_delivery_class():
    """Every output gets the engine's messages of its kind; a best-effort output failing to
    flush does not stop the run, a must-flush one does (no commit past undelivered alerts)."""
    alerts, map_tap = MemorySink(), _Broken()
    summary = _memory_run([Output("alerts", alerts),
                           Output("alerts", map_tap, Delivery.BEST_EFFORT)])
    assert alerts.messages and map_tap.messages == alerts.messages
    assert summary["warning"] + summary["critical"] == len(alerts.messages)
    with pytest.raises(OSError, match="cannot flush"):
        _memory_run([Output("alerts", _Broken())])
    with pytest.raises(ConfigError, match="unknown output kind"):
        Output("positions", MemorySink())


def test_the_outputs_are_delivered_before_the_changelog_is_written():
    """A changelog record that reaches the broker makes a restart skip its vehicles' fixes
    as stale, so their alerts must be delivered first: written in one flush with them, a
    SIGKILL could deliver the state and lose the alerts for good."""
    events: list[str] = []

    class Sink(MemorySink):
        def send(self, key: bytes | None, value: bytes) -> None:
            events.append("alert")

        def flush(self) -> None:
            events.append("flush")

    class Changelog:
        def write(self, cp: Any, owned: Any) -> int:
            events.append("changelog")
            return 0

    q: queue.Queue = queue.Queue()
    q.put([(None, v) for v in crossing_traffic(seed=1)])
    q.put(END)
    cfg = ProcessorConfig(source="memory", predictor="cv", commit_interval_s=0.0)
    io = IO(MemorySource(q), [Output("alerts", Sink())], changelog=Changelog())
    Processor(cfg, io, ConstantVelocity(PathSpec())).run()
    assert "alert" in events and "changelog" in events
    for i, e in enumerate(events):
        if e == "changelog":  # every alert before it was flushed before it
            last_alert = max((j for j in range(i) if events[j] == "alert"), default=-1)
            assert "flush" in events[last_alert + 1:i], events[:i + 1]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(source="file"), "no source"),
        (dict(source="file", input_path="a.jsonl"), "--alerts-out"),
        (dict(source="file", input_path="a.jsonl", alerts_out="a.jsonl"), "same file as --input"),
        (dict(source="file", input_path="a.jsonl", alerts_out="./a.jsonl"), "same file"),
        (dict(source="file", input_path="a.jsonl", alerts_out="b", dlq_out="./b"), "same file"),
        (dict(source="kafka"), "--bootstrap"),
        (dict(source="kafka", bootstrap="h:1", input_path="x"), "not both"),
        (dict(source="kafka", bootstrap="h:1", alerts_topic="vehicle-positions"), "positions"),
        (dict(source="kafka", bootstrap="h:1", dlq_topic="collision-alerts"), "differ"),
        (dict(source="memory", predictor="nn"), "unknown predictor"),
        (dict(source="memory", max_batch_records=0), "max_batch_records"),
    ],
)
def test_processor_config_contradictions(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ProcessorConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(horizon_s=4.0, step_s=0.3), "multiple"),
        (dict(stale_after_s=0.1, risk_interval_s=0.2), "stale_after_s"),
        (dict(reset_gap_s=60.0, ttl_s=30.0), "reset_gap_s"),
        (dict(allowed_lateness_s=-1.0), "allowed_lateness_s"),
        (dict(step_s=float("nan")), "step_s"),
    ],
)
def test_engine_config_contradictions(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        EngineConfig(**kwargs)


def test_engine_config_checks_risk_thresholds():
    class Risk:
        warning_ttc_s = 1.0
        critical_ttc_s = 1.5

    with pytest.raises(ConfigError, match="warning_ttc_s"):
        EngineConfig(risk=Risk())


@pytest.mark.parametrize("args, env, says", [
    (["--bootstrap", "127.0.0.1:9", "--transactional-id", "t"], {},
     "--transactional-id is the id of --exactly-once's transactions: give both or neither"),
    (["--bootstrap", "127.0.0.1:9", "--no-changelog", "--changelog-topic", "c"], {},
     "--changelog-topic names the changelog that --no-changelog turns off"),
    (["--input", "in.jsonl", "--alerts-out", "a.jsonl", "--until-end"], {},
     "--until-end is for Kafka input"),
    (["--input", "in.jsonl", "--alerts-out", "a.jsonl", "--horizon-s", "4.1"], {},
     "--horizon-s (4.1) must be a multiple of --step-s (0.2)"),
    (["--input", "in.jsonl", "--alerts-out", "a.jsonl", "--origin-lat", "50"], {},
     "--origin-lat and --origin-lon must be given together"),
])
def test_settings_that_contradict_stop_at_start_naming_the_options(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        args: list[str], env: dict[str, str], says: str) -> None:
    from trajstream.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_bytes(b"")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["process", "--metrics-port", "0", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trajstream: error: ") and says in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_predictions_follow_the_outputs():
    cfg = ProcessorConfig(source="file", input_path="a", alerts_out="b", predictions_out="c")
    assert cfg.engine.emit_predictions
    assert not ProcessorConfig(source="memory").engine.emit_predictions


def test_each_instance_has_its_own_transactional_id():
    kafka = dict(source="kafka", bootstrap="h:1", group="g", exactly_once=True)
    assert ProcessorConfig(**kafka).tx_id == "g-tx"
    a = ProcessorConfig(**kafka, instance_id="a")
    b = ProcessorConfig(**kafka, instance_id="b", stage="risk")
    assert (a.tx_id, b.tx_id) == ("g-a-tx", "g-risk-b-tx")
    given = ProcessorConfig(**kafka, instance_id="a", transactional_id="t")
    assert given.tx_id == "t"


def test_each_deployment_has_its_own_internal_topic():
    """Two deployments (groups) on one cluster must not read each other's predicted
    kinematics: a shared default topic had one's risk stage publish the other's alerts."""
    kafka = dict(source="kafka", bootstrap="h:1", group="g")
    predict = ProcessorConfig(**kafka, stage="predict")
    risk = ProcessorConfig(**kafka, stage="risk")
    assert predict.internal_name == risk.internal_name == "g-predicted-kinematics"
    assert ProcessorConfig(**{**kafka, "group": "h"}, stage="risk").internal_name != \
        risk.internal_name
    assert ProcessorConfig(**kafka, stage="risk", internal_topic="t").internal_name == "t"


def test_process_cli_errors_and_file_run(tmp_path: Path):
    from trajstream.stream.commands import process

    runner = CliRunner()
    r = runner.invoke(process, ["--metrics-port", "0"])
    assert r.exit_code == 2 and "no source" in r.output
    r = runner.invoke(process, ["--input", "x.jsonl", "--alerts-out", "y.jsonl",
                                "--warning-ttc-s", "1", "--critical-ttc-s", "2"])
    assert r.exit_code == 2 and "--warning-ttc-s" in r.output
    for args, env in ((["--tick-lateness-s", "0.6"], {}),
                      ([], {"TRAJSTREAM_TICK_LATENESS_S": "0.6"})):
        r = runner.invoke(process, ["--input", "x.jsonl", "--alerts-out", "y.jsonl", *args],
                          env=env)
        assert r.exit_code == 2, r.output
        assert "--tick-lateness-s: must be at most --allowed-lateness-s (0.5), got 0.6" in r.output
    r = runner.invoke(process, ["--input", "x.jsonl", "--alerts-out", "y.jsonl", "--step-s",
                                "0.3", "--metrics-port", "0", "--predictor", "cv"])
    assert r.exit_code == 1 and isinstance(r.exception, ConfigError)
    src = tmp_path / "in.jsonl"
    _write(src, crossing_traffic(seed=4))
    out = tmp_path / "out.jsonl"
    r = runner.invoke(process, ["--input", str(src), "--alerts-out", str(out), "--predictor",
                                "cv", "--metrics-port", "0", "--max-batch-records", "333"],
                      env={"TRAJSTREAM_MAX_BATCH_RECORDS": "7"})
    assert r.exit_code == 0, r.output
    got = [orjson.loads(x)["severity"] for x in out.read_bytes().splitlines()]
    assert got == ["warning", "critical"]


def test_process_reads_environment_variables(tmp_path: Path):
    from trajstream.stream.commands import process

    src = tmp_path / "in.jsonl"
    _write(src, crossing_traffic(seed=4))
    out = tmp_path / "out.jsonl"
    env = {"TRAJSTREAM_INPUT": str(src), "TRAJSTREAM_ALERTS_OUT": str(out),
           "TRAJSTREAM_PREDICTOR": "cv", "TRAJSTREAM_METRICS_PORT": "0",
           "TRAJSTREAM_WARNING_TTC_S": "2.0",
           # the LSTM's weights, set for another run: not read for CV (it was refused, exit 2)
           "TRAJSTREAM_WEIGHTS": str(src)}
    r = CliRunner().invoke(process, [], env=env)
    assert r.exit_code == 0, r.output
    alerts = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert alerts and all(a["ttc"] <= 2.0 for a in alerts)


def test_demo_runs_the_simulator_through_the_processor_and_summarises():
    from trajstream.stream.commands import demo

    r = CliRunner().invoke(demo, ["--duration", "20", "--speed", "1000", "--vehicles", "60",
                                  "--reckless", "0.3", "--metrics-port", "0", "--predictor",
                                  "cv", "--json"])
    assert r.exit_code == 0, r.output
    out = r.stdout
    alerts = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert all(a["schema"] == "trajstream.alert/v1" for a in alerts)
    assert "summary:" in r.stderr and "positions in" in r.stderr
    assert "prediction error at 1 s / 4 s: cv" in r.stderr
    # too short for a 4 s future: said, not "nan"
    r = CliRunner().invoke(demo, ["--duration", "3", "--speed", "1000", "--vehicles", "10",
                                  "--metrics-port", "0", "--predictor", "cv"])
    assert r.exit_code == 0, r.output
    assert "/n/a m" in r.stderr and "nan" not in r.stderr, r.stderr


@pytest.mark.parametrize("variable", ["TRAJSTREAM_WEIGHTS", "TRAJSTREAM_MODEL_WEIGHTS"])
def test_demo_reads_no_weights_variable_for_cv(variable: str) -> None:
    """As `process`: the LSTM's weights set in the environment for other runs are not read
    for --predictor cv/ctrv. demo refused them ('--weights applies to --predictor lstm, not
    cv', exit 2), so one environment could not serve both commands."""
    from trajstream.stream.commands import demo

    r = CliRunner().invoke(demo, ["--duration", "3", "--speed", "1000", "--vehicles", "10",
                                  "--metrics-port", "0", "--map-port", "0", "--predictor",
                                  "cv"], env={variable: "/nonexistent/lstm.npz"})
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(demo, ["--duration", "3", "--predictor", "cv", "--weights",
                                  "/nonexistent/lstm.npz"])  # a flag is still refused
    assert r.exit_code == 2 and "applies to --predictor lstm, not cv" in r.output, r.output


def test_stage_all_holding_a_share_of_the_input_warns_that_cross_pairs_are_missed(
        caplog: pytest.LogCaptureFixture) -> None:
    """Several --stage all processes in one group split the partitions, and a pair whose
    vehicles arrive on partitions of different processes is never assessed (a 6-partition
    city on 2 processes: 382 of 752 alerts missed, silently). Each process says so when it
    holds only a share, once per share; one holding every partition says nothing."""
    cfg = ProcessorConfig(source="memory", predictor="cv")
    proc = Processor(cfg, IO(MemorySource(queue.Queue(), topic="pos"), [], inputs=6),
                     ConstantVelocity(PathSpec()))
    with caplog.at_level(logging.WARNING, logger="trajstream.stream.app"):
        proc._on_assign([("pos", 0), ("pos", 1), ("pos", 2)])
        proc._on_assign([("pos", 0), ("pos", 1), ("pos", 2)])  # the same share: said once
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "holds 3 of the 6 partitions of pos" in said[0], said
    assert "--stage predict and --stage risk" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trajstream.stream.app"):
        proc._on_assign([("pos", p) for p in range(6)])
    assert not caplog.records


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_bad_client_setting_is_refused_before_any_topic_is_made(client: str) -> None:
    """A misspelt --consumer-option used to be refused only after the output topics, and a
    missing positions topic (with 1 partition), were created. The checks come first now, so
    a broker that does not exist is never asked for anything."""
    cfg = ProcessorConfig(source="kafka", bootstrap="127.0.0.1:1", positions_topic="p",
                          alerts_topic="a", kafka_client=client,
                          consumer_config={"no.such.setting": "1"})
    with pytest.raises(ConfigError, match="no.such.setting"):
        build_io(cfg)

