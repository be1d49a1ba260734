"""The conflict stage behind an ordered queue: inline, or in a child process on another core.

A drain of the processor spends about 40% of its CPU in the risk assessment and the rest
in decoding, admission and the vehicle stage. Both halves are numpy (and the LSTM) driven
from Python, so they hold the GIL for much of their time and threads barely overlap them
(measured: 1.13x on a file run, at 1.25x the CPU). A child process does: while it assesses
tick k, the main process decodes the next micro-batch and steps the vehicles to tick k+1.

Nothing about the results changes. One worker takes the jobs in the order they were
submitted, so the conflict stage sees the same ticks in the same order as inline and emits
the same alerts, byte for byte (the worker starts from a fork server, never a fork of a
process that has loaded TensorFlow). What changes is when they come out: an assessment's
alerts are handed over by the first :meth:`ConflictRunner.collect` after it has finished,
and ``collect(wait=True)`` waits for all of them. The processor collects at every poll
and waits only when caught up with its input. It cuts a commit point with
:meth:`ConflictRunner.ask`, whose answer comes after every assessment queued before it,
and finishes the commit once it has come (so no committed record has alerts still to
come).

A partial assessment (stream/episodes.py: the vehicles of conflicts awaiting confirmation)
needs the watched set, which only exists once the assessments before it have run; a
worker still busy with those gets the whole tick and picks the watched vehicles itself.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple

from trajstream.errors import TrajstreamError
from trajstream.model.predictors import PathSpec
from trajstream.stream.conflicts import ConflictStage, PredictedTick, TickResult, count_alerts
from trajstream.stream.episodes import EpisodeConfig
from trajstream.stream.risk import RiskConfig

__all__ = ["Answer", "ConflictRunner", "RiskProcessDied", "RiskProcessUnavailable"]

Alert = tuple[bytes, bytes]


class RiskProcessDied(TrajstreamError):
    """The child process running the conflict stage is gone (killed, out of memory)."""


class RiskProcessUnavailable(TrajstreamError):
    """The child process for the conflict stage cannot be started here."""


class ConflictRunner:
    """A :class:`ConflictStage` fed in order; ``in_process`` runs it in a child process.

    Stats and metrics are counted here, in the calling process, from each assessment's
    result, so they are the same in both modes.
    """

    def __init__(self, spec: PathSpec, model: str, risk: RiskConfig,
                 episode_config: EpisodeConfig, metrics: Any = None, *,
                 in_process: bool = False) -> None:
        self.metrics = metrics
        self.stats: dict[str, int] = {"warning": 0, "critical": 0}
        self._args = (spec, model, risk, episode_config)
        self._stage: ConflictStage | None = None
        self._pool: ProcessPoolExecutor | None = None
        if in_process:
            try:
                _start_fork_server()
                self._pool = ProcessPoolExecutor(
                    1, mp_context=multiprocessing.get_context("forkserver"),
                    initializer=_start, initargs=(*self._args, os.getpid()))
            except OSError as exc:  # e.g. no writable /dev/shm for the queue's semaphore
                raise RiskProcessUnavailable(
                    f"cannot start the risk assessment's process ({exc}; its job queue "
                    f"needs POSIX semaphores, in a writable /dev/shm)") from exc
        else:
            self._stage = ConflictStage(*self._args)
        self._jobs: deque[tuple[Future[Any], bool]] = deque()  # (job, partial)
        self.cpu_s = 0.0  # the child process's CPU seconds, as of :meth:`close`
        self._alerts: list[Alert] = []
        # the stage's watched vehicles after the last job handed over (None: not known)
        self._watched: frozenset[str] | None = None

    @property
    def in_process(self) -> bool:
        return self._pool is not None

    # -- jobs, in order --------------------------------------------------------------------

    def assess(self, tick: PredictedTick) -> None:
        """Queue a whole-fleet assessment."""
        self._submit(_assess, tick, partial=False)

    def assess_watched(self, t: float,
                       predicted: Callable[..., PredictedTick]) -> None:
        """Queue a partial assessment at ``t`` of the watched vehicles; ``predicted(t,
        only=None)`` gives the tick's vehicles."""
        if self._stage is not None:
            watched = self._stage.watched()
            if watched:
                self._done(self._stage.assess(predicted(t, only=watched), partial=True), True)
            return
        self._take(wait=False)
        if self._jobs or self._watched is None:  # the child picks them from the whole tick
            self._submit(_assess_watched, predicted(t), partial=True)
        elif self._watched:  # known: send only those
            self._submit(_assess_watched, predicted(t, only=self._watched), partial=True)

    def forget(self, vehicle_ids: Iterable[str]) -> None:
        """Queue dropping the episodes of vehicles that are gone."""
        self._submit(_call, "forget", list(vehicle_ids), partial=False)

    def call(self, method: str, *args: Any) -> Any:
        """Run a method of the stage after every queued job; returns its result (the
        queued jobs' alerts wait for :meth:`collect`)."""
        if self._stage is not None:
            return getattr(self._stage, method)(*args)
        self._submit(_call, method, *args, partial=False)
        return self._take(wait=True)

    def ask(self, method: str, *args: Any) -> Answer:
        """:meth:`call` without waiting: the method runs after every job queued so far, and
        once its answer is :attr:`Answer.ready` so are theirs (:meth:`collect` hands over
        their alerts). A commit point is cut this way while the assessments catch up."""
        if self._stage is not None:
            return Answer(value=getattr(self._stage, method)(*args))
        self._submit(_call, method, *args, partial=False)
        return Answer(self._jobs[-1][0])

    def collect(self, *, wait: bool = False) -> list[Alert]:
        """The alerts of the jobs finished so far, in order; ``wait``: of every job."""
        self._take(wait=wait)
        out, self._alerts = self._alerts, []
        return out

    def child_pid(self) -> int | None:
        """The child process's id (None inline): for logs and tests."""
        return self.call("pid") if self._pool is not None else None

    @property
    def busy(self) -> bool:
        """Jobs queued or alerts not collected yet."""
        return bool(self._jobs or self._alerts)

    def close(self) -> None:
        """Stop the child process (nothing to do inline). Uncollected work is discarded."""
        if self._pool is None:
            return
        for job, _ in self._jobs:
            job.cancel()
        self._jobs.clear()
        with contextlib.suppress(Exception):  # a dead child has no figure to give
            self.cpu_s, _ = self._pool.submit(_in_worker, _call, "cpu").result(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    # -- internals -------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., Any], *args: Any, partial: bool) -> None:
        if self._stage is not None:
            self._done(fn(self._stage, *args), partial)
            return
        if self._pool is None:
            raise RuntimeError("the conflict stage's process was closed")
        try:
            self._jobs.append((self._pool.submit(_in_worker, fn, *args), partial))
        except BrokenProcessPool as exc:
            raise _died() from exc

    def _take(self, *, wait: bool) -> Any:
        """Hand over finished jobs in order (all with ``wait``); the last one's result."""
        last = None
        jobs = self._jobs
        while jobs and (wait or jobs[0][0].done()):
            job, partial = jobs.popleft()
            try:
                last, self._watched = job.result()
            except BrokenProcessPool as exc:
                raise _died() from exc
            self._done(last, partial)
        return last

    def _done(self, result: Any, partial: bool) -> None:
        if isinstance(result, (TickResult, _Assessed)):
            count_alerts(result.severities, None if partial else result.seconds, self.stats,
                         self.metrics)
            self._alerts.extend(result.alerts)


class Answer:
    """A stage method's result that may still be on its way (:meth:`ConflictRunner.ask`)."""

    def __init__(self, job: Future[Any] | None = None, value: Any = None) -> None:
        self._job, self._value = job, value

    @property
    def ready(self) -> bool:
        return self._job is None or self._job.done()

    def result(self) -> Any:
        """The method's return value, waiting for it."""
        if self._job is None:
            return self._value
        try:
            return self._job.result()[0]
        except BrokenProcessPool as exc:
            raise _died() from exc


class _Assessed(NamedTuple):
    """What the caller needs of a :class:`TickResult`, not the arrays of every conflict."""

    alerts: list[Alert]
    severities: list[str]
    seconds: float


def _start_fork_server() -> None:
    """Start multiprocessing's fork server (once per process) with SIGINT and SIGTERM
    blocked, so that it and the worker it forks keep them blocked. Ctrl-C at a terminal,
    systemd and `kill -- -PGID` signal the whole process group; the fork server would die
    of a SIGTERM (it ignores only SIGINT), and the pool takes its end for the worker's. A
    signal that comes meanwhile waits for the unblock, so this process still sees it."""
    from multiprocessing import forkserver, resource_tracker

    resource_tracker.ensure_running()  # first: starting it unblocks both signals again
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _died() -> RiskProcessDied:
    return RiskProcessDied(
        "the risk assessment's process died (killed, or out of memory?); the processor "
        "stops: restarted, it resumes from its committed offsets and changelog "
        "(--no-risk-process assesses risk in the main process instead)")


# -- in the child process --------------------------------------------------------------------

_STAGE: ConflictStage | None = None


def _start(spec: PathSpec, model: str, risk: RiskConfig, episode_config: EpisodeConfig,
           parent: int) -> None:
    global _STAGE
    # The parent decides when this process ends (see _start_fork_server): on a stop signal
    # it finishes its batch, takes the last alerts from here and commits.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    _STAGE = ConflictStage(spec, model, risk, episode_config)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True,
                     name="parent-watch").start()


def _exit_with(parent: int) -> None:
    """End this process when ``parent`` ends. A killed processor tells nobody: this child's
    job queue holds a write end of its own (multiprocessing's queues do), so it never reads
    an end of input, and the fork server it came from waits for it."""
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):  # not Linux 5.3+: look every second
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(0)
    select.select([fd], [], [])  # readable once the process has ended
    os._exit(0)


def _in_worker(fn: Callable[..., Any], *args: Any) -> tuple[Any, frozenset[str]]:
    """Run one job; its result and who is watched after it."""
    assert _STAGE is not None
    return _slim(fn(_STAGE, *args)), frozenset(_STAGE.watched())


def _slim(result: Any) -> Any:
    """A :class:`TickResult` as :class:`_Assessed`; anything else as it is."""
    if not isinstance(result, TickResult):
        return result
    return _Assessed(result.alerts, result.severities, result.seconds)


def _assess(stage: ConflictStage, tick: PredictedTick) -> TickResult:
    return stage.assess(tick)


def _assess_watched(stage: ConflictStage, tick: PredictedTick) -> TickResult | None:
    return stage.assess_watched(tick)


def _call(stage: ConflictStage, method: str, *args: Any) -> Any:
    if method == "pid":
        return os.getpid()
    if method == "cpu":
        return time.process_time()
    return getattr(stage, method)(*args)
