"""Restart after a crash: how long until a SIGKILLed processor's successor processes again.

For each Kafka client and group setting, `trajstream process` reads a replayed positions
topic, is SIGKILLed a few seconds in and started again at once with the same group; printed:
  - restart -> first record: from the restart to the successor's first processed record
    (target <= 10 s; the dead member holds its partitions until its session expires)
  - catch-up: from the restart until the successor has read the topic to its end
    (--until-end), i.e. how long the crash set the output back.
Settings: "before" = the clients' own defaults (45 s sessions), "default" = the product's
defaults, "static" = --instance-id (static membership: the successor takes the dead member's
place without a rebalance).

Run: .venv/bin/python bench/bench_recovery.py [--clients confluent,kafka-python]
     [--settings before,default,static] [--vehicles 150] [--duration 240]
     [--bootstrap HOST:PORT]
Without --bootstrap a throwaway broker is started from broker/lib (as `make test` does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _kit import kafka_broker, parser

# The clients' own session settings, to show what the product defaults replaced.
BEFORE = {"confluent": ["session.timeout.ms=45000", "heartbeat.interval.ms=3000"],
          "kafka-python": ["session.timeout.ms=45000", "heartbeat.interval.ms=3000"]}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trajstream", "--log-level", "INFO", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}


class _Run:
    """A processor whose stderr is watched for a line, with the time it appeared."""

    def __init__(self, args: list[str]) -> None:
        self.start = time.monotonic()
        self.proc = subprocess.Popen(_cmd(*args), env=_env(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line))

    def wait_for(self, text: str, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for t, line in list(self.lines):
                if text in line:
                    return t
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        tail = "".join(line for _, line in self.lines[-20:])
        raise RuntimeError(f"no {text!r} within {timeout_s:g} s:\n{tail}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _trial(bootstrap: str, topic: str, client: str, setting: str) -> tuple[float, float]:
    group = f"bench-recovery-{uuid.uuid4().hex[:8]}"
    args = ["process", "--bootstrap", bootstrap, "--positions-topic", topic,
            "--alerts-topic", f"{group}-alerts", "--group", group, "--metrics-port", "0",
            "--kafka-client", client]
    if setting == "before":
        for opt in BEFORE[client]:
            args += ["--consumer-option", opt]
    elif setting == "static":
        args += ["--instance-id", f"{group}-1"]
    first = _Run(args)
    try:
        first.wait_for("first record", 180)
        time.sleep(3.0)
        if first.proc.poll() is not None:
            raise RuntimeError("the first run ended before the kill: use more traffic")
    finally:
        first.kill()
    successor = _Run([*args, "--until-end"])
    try:
        t_first = successor.wait_for("first record", 300) - successor.start
        successor.proc.wait(timeout=600)
        t_end = time.monotonic() - successor.start
        if successor.proc.returncode != 0:
            raise RuntimeError("the successor failed:\n"
                               + "".join(line for _, line in successor.lines[-20:]))
    finally:
        successor.kill()
    return t_first, t_end


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--clients", default="confluent,kafka-python",
                    help="Kafka clients to test, comma-separated (confluent, kafka-python)")
    ap.add_argument("--settings", default="before,default,static",
                    help="group settings to test, comma-separated: before (the clients' own 45 s "
                    "sessions), default (the product's), static (--instance-id)")
    ap.add_argument("--vehicles", type=int, default=150, help="simulated vehicles")
    ap.add_argument("--duration", type=float, default=240.0, help="simulated seconds")
    ap.add_argument("--partitions", type=int, default=3, help="partitions of the positions topic")
    ap.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp, \
            kafka_broker(a.bootstrap) as bootstrap:
        positions = Path(tmp) / "positions.jsonl"
        subprocess.run(_cmd("simulate", "--vehicles", str(a.vehicles), "--duration",
                            str(a.duration), "--seed", "3", "--no-pace", "--out",
                            str(positions)), env=_env(), check=True,
                       stderr=subprocess.DEVNULL)
        n = sum(1 for _ in positions.open("rb"))
        topic = f"bench-recovery-{uuid.uuid4().hex[:8]}"
        from trajstream.stream.kafka import create_topics

        create_topics(bootstrap, [topic], partitions=a.partitions)
        subprocess.run(_cmd("replay", str(positions), "--bootstrap", bootstrap, "--topic",
                            topic, "--no-pace"), env=_env(), check=True,
                       stderr=subprocess.DEVNULL)
        print(f"recovery after SIGKILL: {n:,} positions on {a.partitions} partition(s), "
              f"restart at once with the same group (target: first record <= 10 s)")
        print(f"  {'client':<14}{'setting':<10}{'restart -> first record':>26}"
              f"{'catch-up':>12}")
        for client in a.clients.split(","):
            for setting in a.settings.split(","):
                try:
                    t_first, t_end = _trial(bootstrap, topic, client, setting)
                except RuntimeError as exc:
                    print(f"  {client:<14}{setting:<10} failed: {exc}")
                    continue
                print(f"  {client:<14}{setting:<10}{t_first:>24.1f} s{t_end:>10.1f} s",
                      flush=True)


if __name__ == "__main__":
    main()
