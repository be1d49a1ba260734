"""A run always stops: the risk interval is bounded, one engine call covers at most about a
second of event time, SIGTERM is seen while a pipe is silent, a stop signal to the whole
process group ends the run as cleanly as one to the processor, and a second signal aborts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from trajstream.cli import main
from trajstream.errors import ConfigError
from trajstream.stream.app import event_time_chunks
from trajstream.stream.config import EngineConfig

sys.path.insert(0, str(Path(__file__).parent))
from test_engine import crossing_traffic  # noqa: E402


def test_risk_interval_below_the_minimum_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="risk_interval_s must be >= 0.05"):
        EngineConfig(risk_interval_s=1e-6)
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(crossing_traffic(seed=4)) + b"\n")
    argv = ["process", "--input", str(src), "--alerts-out", str(tmp_path / "a.jsonl"),
            "--predictor", "cv", "--metrics-port", "0"]
    assert main([*argv, "--risk-interval-s", "1e-6"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--risk-interval-s" in err and "x>=0.05" in err and len(err.splitlines()) == 1
    assert main([*argv, "--risk-interval-s", "0.05"]) == 2  # finer than --tick-s (0.1 s)
    err = capsys.readouterr().err.strip()
    assert "multiple of --tick-s" in err and len(err.splitlines()) == 1
    assert main([*argv, "--risk-interval-s", "0.05", "--tick-s", "0.05"]) == 0


def test_event_time_chunks_cover_the_batch_in_order_and_bound_the_span() -> None:
    rng = np.random.default_rng(3)
    ts = 1e9 + np.sort(rng.uniform(0, 20, 500)) + rng.normal(0, 0.3, 500)  # disordered
    ts[100] += 3600.0  # one far jump
    chunks = event_time_chunks(ts, 1.0)
    assert chunks[0][0] == 0 and chunks[-1][1] == ts.size
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))
    running = np.maximum.accumulate(ts)
    for lo, hi in chunks:
        assert hi > lo and running[hi - 1] - running[lo] <= 1.0
    assert event_time_chunks(ts[:10], 60.0) == [(0, 10)]
    assert event_time_chunks(np.empty(0)) == []


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        assert proc.poll() is None, path.read_text()
        assert time.monotonic() < deadline, f"no {text!r}: {path.read_text()}"
        time.sleep(0.05)


def test_sigterm_ends_a_run_reading_a_silent_pipe(tmp_path: Path) -> None:
    """`process --input -` whose writer is alive but silent: SIGTERM ends it (exit 0) and
    the alerts of what was read are written."""
    log = tmp_path / "log.txt"
    alerts = tmp_path / "alerts.jsonl"
    cmd = [sys.executable, "-m", "trajstream", "--log-level", "INFO", "process", "--input",
           "-", "--alerts-out", str(alerts), "--predictor", "cv", "--metrics-port", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err, env=env)
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"\n".join(crossing_traffic(seed=4)) + b"\n")
        proc.stdin.flush()
        _wait_for(log, "processing -", proc, 120)
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
    print(f"\n[stop] SIGTERM on a silent pipe: exit {code} after {took:.2f} s")
    assert code == 0, log.read_text()
    assert alerts.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_to_the_process_group_ends_the_run_cleanly(tmp_path: Path, sig) -> None:
    """Ctrl-C at a terminal (SIGINT), systemd and `kill -- -PGID` (SIGTERM) signal every
    process of the group, the risk process too: it must outlive the batch the processor
    finishes (exit 0, alerts written), not die first and turn the stop into an error."""
    log = tmp_path / "log.txt"
    alerts = tmp_path / "alerts.jsonl"
    cmd = [sys.executable, "-m", "trajstream", "--log-level", "INFO", "process", "--input",
           "-", "--alerts-out", str(alerts), "--metrics-port", "0", "--risk-process"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    # 2 crossing cars and 300 others (assessments that take a while), 10 fixes a second
    lines = crossing_traffic(seed=4, n_background=300, seconds=120.0)
    second = 302 * 10
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err, env=env,
                                start_new_session=True)
    assert proc.stdin is not None
    stdin = proc.stdin

    def feed() -> None:  # a second of event time every 50 ms until the run ends
        for i in range(0, len(lines), second):
            try:
                stdin.write(b"\n".join(lines[i:i + second]) + b"\n")
                stdin.flush()
            except (BrokenPipeError, ValueError):
                return
            time.sleep(0.05)

    writer = threading.Thread(target=feed, daemon=True)
    try:
        writer.start()
        _wait_for(log, "first record", proc, 120)
        time.sleep(3.0)  # assessments under way in the risk process
        os.killpg(proc.pid, sig)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        writer.join(timeout=30)  # its next write after the run's end fails: it returns
        with contextlib.suppress(BrokenPipeError):  # what it could not deliver
            stdin.close()
    text = log.read_text()
    assert code == 0, text
    assert "done:" in text and "died" not in text, text
    assert alerts.stat().st_size > 0


def test_a_second_signal_aborts_at_once(monkeypatch) -> None:
    """One rule for every command (trajstream/signals.py): the first signal asks to finish,
    the second aborts, with a hard exit armed in case closing the outputs hangs."""
    from trajstream import signals

    armed: list[float] = []

    class _Timer:
        def __init__(self, interval: float, fn, args) -> None:
            armed.append(interval)
            self.daemon = False

        def start(self) -> None:
            pass

    monkeypatch.setattr(signals.threading, "Timer", _Timer)
    with signals.stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5.0)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5.0)  # the handler raises here
    assert armed == [signals.ABORT_GRACE_S], "a hard exit is armed in case closing hangs"
