"""`trajstream simulate` and `trajstream replay` as a user runs them: how they stop, what
they say, and which input they refuse (no broker: replay's Kafka sink is a file here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from trajstream.cli import main
from trajstream.simulator import cli as sim_cli

# A terminal's Ctrl-C: Python's own SIGINT handler, even when the test runner was started
# with SIGINT ignored (a background job), which the child would inherit.
_AS_AT_A_TERMINAL = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler)"
                     "\n{patch}\nfrom trajstream.cli import main; raise SystemExit(main())")
# replay's Kafka sink replaced by one appending to the file named by --topic, flushed per write
_FILE_AS_TOPIC = """
import trajstream.simulator.cli as c
class FileSink:
    def __init__(self, bootstrap, topic, **kw):
        self.f = open(topic, "ab")
    def write(self, messages):
        self.f.write(b"".join(v + b"\\n" for _, v in messages))
        self.f.flush()
    def close(self):
        self.f.write(b"closed\\n")
        self.f.close()
c.KafkaSink = FileSink
"""


def _start(args: list[str], patch: str = "") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    code = _AS_AT_A_TERMINAL.format(patch=patch)
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_until(done: Callable[[], bool], proc: subprocess.Popen[str],
                timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the command never got going"
        time.sleep(0.05)


def _interrupt(proc: subprocess.Popen[str]) -> str:
    """Ctrl-C; the command's stderr once it has exited."""
    try:
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctrl_c_ends_an_endless_simulation_and_keeps_its_files(tmp_path: Path) -> None:
    """`--duration 0` runs until stopped: Ctrl-C is its normal end, not an abort."""
    out, truth = tmp_path / "live.jsonl", tmp_path / "live.truth"
    proc = _start(["simulate", "--vehicles", "20", "--duration", "0", "--reckless", "0.5",
                   "--out", str(out), "--truth", str(truth)])
    _wait_until(lambda: any(p.stat().st_size for p in tmp_path.glob(".live.jsonl.*.part")),
                proc)
    err = _interrupt(proc)
    assert proc.returncode == 0, err
    lines = out.read_bytes().splitlines()
    assert lines and all(orjson.loads(line)["vehicle_id"] for line in lines)
    assert all(orjson.loads(line)["type"] for line in truth.read_bytes().splitlines())
    assert f"published {len(lines)} messages to {out}" in err.splitlines()[-1], err
    assert not list(tmp_path.glob("*.part")), "no temporary file left behind"


def test_ctrl_c_ends_a_replay_at_once_with_its_summary(tmp_path: Path) -> None:
    """Paced through a 10-minute gap in the recording: Ctrl-C flushes what was sent and
    prints the summary instead of waiting out the gap or aborting."""
    src, topic = tmp_path / "recorded.jsonl", tmp_path / "topic.jsonl"
    fixes = [{"vehicle_id": "veh-1", "ts": 1000.0 + k * 0.1, "x": k, "y": 0} for k in range(5)]
    fixes.append({"vehicle_id": "veh-1", "ts": 1600.0, "x": 5, "y": 0})
    src.write_bytes(b"".join(orjson.dumps(f) + b"\n" for f in fixes) + b"garbage\n")
    proc = _start(["replay", str(src), "--bootstrap", "unused:9092", "--topic", str(topic)],
                  patch=_FILE_AS_TOPIC)
    _wait_until(lambda: topic.exists() and topic.read_bytes().count(b"\n") >= 5, proc)
    t0 = time.monotonic()
    err = _interrupt(proc)
    assert proc.returncode == 0, err
    assert time.monotonic() - t0 < 20, "the pacer's wait ends with the stop"
    assert topic.read_bytes().splitlines()[-1] == b"closed", "the sink was flushed and closed"
    assert err.splitlines()[-1] == (f"trajstream replay: published 5 messages to {topic}; "
                                    "skipped 0 malformed lines"), err


class _ListSink:
    """replay's Kafka sink, in memory."""

    def __init__(self, bootstrap: str, topic: str, **kw: object) -> None:
        self.topic = topic
        self.sent: list[bytes] = []

    def write(self, messages: list[tuple[bytes, bytes]]) -> None:
        self.sent.extend(v for _, v in messages)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("lines", "code", "says"), [
    ([b"garbage", b'{"vehicle_id": "veh-1"}'], 1,
     "trajstream: error: none of the 2 lines of {src} is a positions record"),
    ([], 0, "trajstream replay: published 0 messages to hA-t; skipped 0 malformed lines"),
    ([b"garbage", b'{"vehicle_id":"veh-1","ts":1.0,"x":0,"y":0}'], 0,
     "trajstream replay: published 1 messages to hA-t; skipped 1 malformed lines"),
], ids=["all-malformed", "empty", "one-good"])
def test_replay_of_nothing_but_malformed_lines_is_an_error(
        tmp_path: Path, monkeypatch, capsys, lines: list[bytes], code: int, says: str) -> None:
    """As `trajstream process` refuses an input of which no record was accepted; an empty
    file is not a mistake."""
    monkeypatch.setattr(sim_cli, "KafkaSink", _ListSink)
    src = tmp_path / "recorded.jsonl"
    src.write_bytes(b"".join(line + b"\n" for line in lines))
    assert main(["replay", str(src), "--bootstrap", "unused:9092", "--topic", "hA-t",
                 "--no-pace"]) == code
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(says.format(src=src)), err


def test_simulate_ends_with_a_summary_on_stderr(tmp_path: Path, capfd) -> None:
    """One line like replay's and data import's; standard output stays the positions'."""
    out, truth = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    argv = ["simulate", "--vehicles", "30", "--duration", "20", "--reckless", "0.5",
            "--no-pace"]
    assert main([*argv, "--out", str(out), "--truth", str(truth)]) == 0
    captured = capfd.readouterr()
    events = [orjson.loads(line)["type"] for line in truth.read_bytes().splitlines()]
    n_collisions = events.count("collision")
    assert events and captured.out == ""
    assert captured.err.splitlines() == [
        f"trajstream simulate: simulated 30 vehicles for 20 s: published "
        f"{len(out.read_bytes().splitlines())} messages to {out}; {n_collisions} collisions, "
        f"{len(events) - n_collisions} near misses"]
    assert main([*argv, "--out", "-"]) == 0
    captured = capfd.readouterr()
    assert captured.out.encode() == out.read_bytes(), "the same seed, the same positions"
    assert len(captured.err.splitlines()) == 1
    assert captured.err.splitlines()[0].endswith(" to stdout; "
                                                  f"{n_collisions} collisions, "
                                                  f"{len(events) - n_collisions} near misses")


def test_a_city_too_small_for_the_fleet_says_how_many_it_held(tmp_path: Path, capfd) -> None:
    out = tmp_path / "p.jsonl"
    assert main(["simulate", "--vehicles", "300", "--grid", "1", "--duration", "2",
                 "--no-pace", "--out", str(out)]) == 0
    err = capfd.readouterr().err.strip()
    ids = {orjson.loads(line)["vehicle_id"] for line in out.read_bytes().splitlines()}
    held = int(err.split("simulated ")[1].split()[0])
    assert 0 < held <= len(ids) and held < 300, err
    assert err.endswith(f"(at most {held} of --vehicles 300 at once: the city had no "
                        "room for more; a larger --grid holds more)"), err


@pytest.mark.parametrize("effects", [["--gps-sigma", "1"], ["--jitter", "0.1", "--drop-rate",
                                                            "0.2"]])
def test_clean_with_a_sensor_effect_is_refused(tmp_path: Path, capsys, effects) -> None:
    out = tmp_path / "p.jsonl"
    assert main(["simulate", "--clean", *effects, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--clean turns sensor effects off; " in err and effects[0] in err, err
    assert not out.exists()


@pytest.mark.parametrize("pace, live", [([], True), (["--no-pace"], False)])
def test_traffic_published_live_starts_now_and_files_at_a_fixed_date(
        monkeypatch, pace: list[str], live: bool) -> None:
    import time

    from trajstream.simulator.config import DEFAULT_START_TS

    sinks: list[_ListSink] = []
    monkeypatch.setattr(sim_cli, "KafkaSink",
                        lambda *a, **kw: sinks.append(_ListSink(*a, **kw)) or sinks[-1])
    before = time.time()
    assert main(["--log-level", "ERROR", "simulate", "--vehicles", "2", "--duration", "0.3",
                 "--bootstrap", "127.0.0.1:9", *pace]) == 0
    first = min(orjson.loads(v)["ts"] for v in sinks[0].sent)
    if live:
        assert before - 1.0 <= first <= time.time()
    else:
        assert abs(first - DEFAULT_START_TS) < 1.0
