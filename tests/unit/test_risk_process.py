"""The conflict stage in a child process (stream/risk_process.py): the same alerts, episode
state and counts as inline, and a clear error when the child dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from trajstream.model.predictors import ConstantVelocity, PathSpec
from trajstream.simulator import SimConfig, iter_ticks
from trajstream.stream.codec import CodecConfig, decode_batch
from trajstream.stream.config import EngineConfig
from trajstream.stream.engine import Engine
from trajstream.stream.metrics import Metrics
from trajstream.stream.risk_process import RiskProcessDied

SPEC = PathSpec()


@pytest.fixture(scope="module")
def traffic() -> list[tuple[bytes, bytes]]:
    cfg = SimConfig(vehicles=60, duration_s=30.0, seed=3, reckless_fraction=0.3, warmup_s=5.0)
    return [m for tick in iter_ticks(cfg) for m in tick.messages]


def _engine(risk_process: bool, metrics: Metrics | None = None) -> Engine:
    return Engine(EngineConfig(), ConstantVelocity(SPEC), metrics, risk_process=risk_process)


def _feed(eng: Engine, msgs: list[tuple[bytes, bytes]], start: int, stop: int,
          batch: int = 500) -> list[bytes]:
    out: list[bytes] = []
    for i in range(start, stop, batch):
        chunk = msgs[i:min(i + batch, stop)]
        b, rej = decode_batch([k for k, _ in chunk], [v for _, v in chunk], CodecConfig())
        assert not rej
        o = eng.process(b, i, partitions=np.zeros(len(b), dtype=np.int64))
        out += [v for _, v in o.alerts]
    return out


def _counts(m: Metrics) -> tuple[float, ...]:
    alerts = [m.alerts.labels(severity=s)._value.get() for s in ("warning", "critical")]
    risk = [s.value for s in m.risk_seconds.collect()[0].samples
            if s.name.endswith("_count")]
    return (*alerts, *risk)


def test_the_risk_process_emits_the_inline_alerts_byte_for_byte(traffic):
    got = {}
    for mode in (False, True):
        m = Metrics()
        eng = _engine(mode, m)
        try:
            assert eng.conflicts.in_process is mode
            alerts = _feed(eng, traffic, 0, len(traffic))
            alerts += [v for _, v in eng.flush().alerts]
            got[mode] = (alerts, {k: eng.stats[k] for k in ("warning", "critical")},
                         _counts(m))
        finally:
            eng.close()
    assert len(got[False][0]) >= 3
    assert got[True] == got[False]


def test_checkpoints_beside_the_risk_process_hold_the_inline_episodes(traffic):
    """A commit point (the processor settles first): the changed vehicles, their episodes
    and the latest assessment's time are those of the inline stage."""
    cut = len(traffic) // 2
    points = {}
    for mode in (False, True):
        eng = _engine(mode)
        try:
            alerts = _feed(eng, traffic, 0, cut)
            alerts += [v for _, v in eng.settle().alerts]
            cp = eng.checkpoint()
            eps = {v: e for v, e in cp.vehicles.episodes.items() if e}
            points[mode] = (alerts, eps, cp.meta["prev_t"])
        finally:
            eng.close()
    assert points[False][1]  # open episodes to compare
    assert points[True] == points[False]


def test_a_commit_point_cut_while_the_risk_process_assesses_holds_its_own_state(traffic):
    """The processor cuts a commit point and goes on (Engine.cut): the checkpoint taken
    once the risk process has caught up, after more records were applied, is the one of
    the point, as an inline engine gives it there (vehicle states, the shards' other
    vehicles, episodes, event-time position)."""
    cut, more = len(traffic) // 2, len(traffic) * 3 // 4

    def content(cp):
        every = cp.export(ids)
        return (cp.vehicles.ids, cp.vehicles.rows.tolist(), cp.vehicles.rec.tolist(),
                cp.vehicles.episodes, cp.tombstones, cp.meta, every.ids, every.rows.tolist(),
                every.episodes)

    ref = _engine(False)
    try:
        _feed(ref, traffic, 0, cut)
        ids = sorted(v for v in ref.store.ids if v is not None)
        want = content(ref.checkpoint())
    finally:
        ref.close()
    eng = _engine(True)
    try:
        _feed(eng, traffic, 0, cut)
        point = eng.cut()
        _feed(eng, traffic, cut, more)  # the states move on meanwhile
        got = content(point.result())
    finally:
        eng.close()
    assert want[3]  # episodes to compare
    assert got == want


def test_a_dead_risk_process_stops_the_engine_with_a_clear_error(traffic):
    eng = _engine(True)
    try:
        _feed(eng, traffic, 0, 3000)
        eng.settle()
        os.kill(eng.conflicts.child_pid(), signal.SIGKILL)
        with pytest.raises(RiskProcessDied, match="--no-risk-process"):
            for _ in range(50):  # the pool notices the death within a few polls
                _feed(eng, traffic, 3000, 6000)
                eng.settle()
                time.sleep(0.1)
    finally:
        eng.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def _ends(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_closing_the_engine_ends_its_risk_process():
    eng = _engine(True)
    pid = eng.conflicts.child_pid()
    assert _alive(pid)
    eng.close()
    assert _ends(pid)


def test_a_killed_processor_leaves_no_risk_process_behind():
    """SIGKILL gives the processor no chance to stop its child: the child sees it go."""
    script = (
        "import time\n"
        "from trajstream.model.predictors import ConstantVelocity, PathSpec\n"
        "from trajstream.stream.config import EngineConfig\n"
        "from trajstream.stream.engine import Engine\n"
        "eng = Engine(EngineConfig(), ConstantVelocity(PathSpec()), risk_process=True)\n"
        "print(eng.conflicts.child_pid(), flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        assert _alive(pid)
    finally:
        proc.kill()
        proc.wait()
    assert _ends(pid)


def test_where_the_child_cannot_start_the_default_assesses_inline(monkeypatch, caplog):
    """No writable /dev/shm (a hardened container) leaves multiprocessing without its
    semaphores: measured with a read-only tmpfs there, the pool's queue fails with EROFS.
    The default then assesses risk in the main process and says so; asked for by name, the
    processor stops with that reason and the option that avoids it."""
    from trajstream.stream import risk_process
    from trajstream.stream.app import build_engine
    from trajstream.stream.config import ProcessorConfig
    from trajstream.stream.risk_process import RiskProcessUnavailable

    def no_semaphores(*_args, **_kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(risk_process, "ProcessPoolExecutor", no_semaphores)
    io = None  # the whole pipeline (stage "all") takes nothing from the I/O
    cfg = ProcessorConfig(source="memory", predictor="cv", risk_process=None)
    # the default's choice on a machine of two or more CPUs, whatever this one has
    monkeypatch.setattr(ProcessorConfig, "risk_in_process", property(lambda _self: True))
    with caplog.at_level("WARNING", logger="trajstream.stream.app"):
        eng = build_engine(cfg, io, ConstantVelocity(SPEC), Metrics())
    assert not eng.risk_in_process
    assert "/dev/shm" in caplog.text and "in the main process instead" in caplog.text
    with pytest.raises(RiskProcessUnavailable, match="--no-risk-process"):
        build_engine(ProcessorConfig(source="memory", predictor="cv", risk_process=True), io,
                     ConstantVelocity(SPEC), Metrics())
