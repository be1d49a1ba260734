"""Helpers the end-to-end tests share: run `trajstream` as a user would, read a topic back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trajstream.stream.kafka import make_consumer


def cli_env() -> dict[str, str]:
    """This environment without TRAJSTREAM_* settings, so only the test's flags count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT prints every thread's stack (see trajstream)
    return env


def cli_cmd(*args: str, log_level: str = "WARNING") -> list[str]:
    return [sys.executable, "-m", "trajstream", "--log-level", log_level, *args]


def trajstream(*args: str, timeout: float = 300.0,
               log_level: str = "WARNING") -> subprocess.CompletedProcess[str]:
    """Run one command to completion; fail the test with its stderr when it exits non-zero,
    and with every thread's stack when it is still running after ``timeout`` s (a hang)."""
    cmd = cli_cmd(*args, log_level=log_level)
    with subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGABRT)  # the fault handler prints the stacks, then exits
            try:
                _, err = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
            raise AssertionError(f"trajstream {' '.join(args)} still ran after {timeout:g} s; "
                                 f"its threads then:\n{err[-8000:]}") from None
    proc = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    assert proc.returncode == 0, f"trajstream {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return proc


def read_topic(bootstrap: str, topic: str, *, client: str = "confluent",
               read_committed: bool = False, timeout_s: float = 60.0,
               config: dict[str, Any] | None = None) -> list[Any]:
    """Every record of ``topic``, read to its end (``config``: client settings, e.g. SASL)."""
    conf = {"isolation.level": "read_committed"} if read_committed else {}
    conf.update(config or {})
    consumer = make_consumer(bootstrap, [topic], group=None, client=client, config=conf)
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            recs = consumer.poll(5000, 0.5)
            out.extend(recs)
            if not recs and consumer.assignment() and consumer.lag() == 0:
                return out
    finally:
        consumer.close()
    raise AssertionError(f"could not read {topic} to its end within {timeout_s} s")


def wait_for_log(path: Path, text: str, proc: subprocess.Popen[Any], timeout_s: float) -> None:
    """Until ``text`` appears in the log file ``path`` (fails if ``proc`` ends first)."""
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        assert proc.poll() is None, f"ended before {text!r}:\n{path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {timeout_s} s"
        time.sleep(0.1)


def stacks(proc: subprocess.Popen[Any], log_path: Path) -> str:
    """The stuck ``proc``'s thread stacks (its SIGUSR1 dump, written to its log) and log tail."""
    import signal

    proc.send_signal(signal.SIGUSR1)
    time.sleep(1.0)
    return log_path.read_text()[-6000:]
