"""What several benchmarks share: a throwaway Kafka broker, cached simulated traffic and
--help that shows each option's default.

The benchmarks run as scripts (``python bench/bench_x.py``), so this folder is on their
import path and ``import _kit`` finds this module.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".run" / "bench"


def parser(doc: str | None, *, bootstrap: bool = False) -> argparse.ArgumentParser:
    """A benchmark's command line: its docstring's first line as the description, defaults
    in --help, and with ``bootstrap`` the broker option every Kafka benchmark takes."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0],
                                 formatter_class=HelpFormatter)
    if bootstrap:
        ap.add_argument("--bootstrap", default=os.environ.get("TRAJSTREAM_BENCH_BOOTSTRAP"),
                        help="Kafka bootstrap servers (HOST:PORT) of a running broker; unset: "
                        "start a throwaway one (env TRAJSTREAM_BENCH_BOOTSTRAP)")
    return ap


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" only where there is one: not to flags, nor to options whose
    unset value the help already explains."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def _broker_module() -> ModuleType:
    """broker/broker.py, loaded by path: the package name ``kafka`` is kafka-python's."""
    name = "trajstream_bench_broker"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "broker" / "broker.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # its dataclasses look their module up while being defined
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def kafka_broker(bootstrap: str | None = None) -> Iterator[str]:
    """Yield ``bootstrap`` if given, else start a one-node broker for the block, stopped after."""
    if bootstrap:
        yield bootstrap
        return
    mod = _broker_module()
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as data_dir:
        print("  (starting a throwaway Kafka broker ...)", flush=True)
        broker = mod.start_broker(mod.free_port(), mod.free_port(), Path(data_dir), wait_s=120)
        try:
            yield str(broker.bootstrap)
        finally:
            broker.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def simulated_traffic(vehicles: int, seconds: float, seed: int) -> Path:
    """Positions of a built-in simulator run as JSONL, one line per message (cached)."""
    from trajstream.simulator import SimConfig, iter_ticks

    path = CACHE / f"traffic-{vehicles}v-{seconds:g}s-seed{seed}.jsonl"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    t0 = time.perf_counter()
    with tmp.open("wb") as f:
        for tick in iter_ticks(SimConfig(vehicles=vehicles, duration_s=seconds, seed=seed)):
            f.write(b"".join(v + b"\n" for _, v in tick.messages))
    tmp.rename(path)
    print(f"  simulated {vehicles} vehicles x {seconds:g} s in {time.perf_counter() - t0:.0f} s",
          flush=True)
    return path
