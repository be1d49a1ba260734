"""The processor's pure core: positions in, alerts and predictions out, no I/O.

Results depend only on the records and their arrival order, never on how the records were
cut into micro-batches or how fast they came. That is what makes a file replay, a Kafka
replay and a live run agree, and it rests on four rules, all on event time:

1. **Arrival checks, per record in arrival order.** A record is dropped ``future`` when it is
   more than ``max_future_s`` ahead of both the newest event time accepted so far and the
   wall clock, so one wrong clock cannot stall everyone (the wall clock only matters for
   data stamped in the future; replays of recorded data never depend on it); ``late`` when
   its tick was released (see 2) by the watermark before its batch, or ends more than
   ``allowed_lateness_s`` before the newest event time of its own input partition;
   ``stale`` when it is at or before an earlier record of the same vehicle (duplicates,
   out-of-order fixes, replays after a restart); ``dense`` when the vehicle already has a
   fix in the same ``min_fix_interval_s`` bucket of event time (a flooding sender cannot
   cost more than a bounded number of sub-steps).
2. **Ticks out by cadence or on evidence, late by the watermark.** Tick k is the
   event-time interval ``((k-1)*dt, k*dt]``, dt = ``tick_s`` (0.1 s). Accepted records
   wait in a buffer; tick k is released as soon as every input partition is complete
   through it: every vehicle that may still report in it has (its cadence,
   stream/cadence.py), or the partition has delivered a record later than
   ``k*dt + tick_lateness_s`` (a record arriving further behind its own partition than
   that counts at the partition's current tick instead, and one its vehicle's cadence did
   not expect a tick later, so no record finds its tick released); at the latest when the
   watermark ``M - allowed_lateness_s`` (M the newest event time seen) passes its end.
   Only the watermark makes a record ``late``. See stream/admission.py.
3. **Ticks.** Released records are applied tick by tick in event-time order. Within a tick a
   vehicle with several fixes gets one sub-step per fix; each sub-step runs the kinematic
   update and one batched predictor call for the vehicles in it (never per message). Then
   risk is assessed at ``t = k*dt`` over every vehicle updated within ``stale_after_s``
   when ``t`` is a multiple of ``risk_interval_s`` (0.2 s), and the episode tracker turns
   conflicts into alerts. At the ticks between, only the vehicles of conflicts awaiting
   confirmation (and the other vehicles of their open episodes) are assessed, on their
   next fix: a conflict near contact found at one whole-fleet assessment is confirmed (as a
   warning) a tick later, not an interval later; a critical alert still takes a whole-fleet
   assessment (stream/episodes.py).
4. **Deterministic state layout.** Vehicle slots are allocated when a tick applies their
   first fix and freed by TTL eviction on tick times, so the same released sequence gives
   the same slots and the same fleet order.

The engine composes three stages, each testable alone: admission (rules 1 and 2,
stream/admission.py), the vehicle stage (3 and 4: state, predictor, predictions,
stream/vehicles.py) and the conflict stage (risk and alert episodes over plain arrays of
predicted kinematics, stream/conflicts.py). Online prediction error
(stream/online_error.py) is scored on the vehicle stage's sub-steps.
"""


from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trajstream.model.predictors import Predictor
from trajstream.stream.admission import NO_TICK, Admission
from trajstream.stream.allocator import keep_temporaries_in_heap
from trajstream.stream.checkpoint import (
    Checkpoint,
    VehicleRows,
    VehicleState,
    restored_tick,
)
from trajstream.stream.codec import PositionBatch
from trajstream.stream.config import EngineConfig
from trajstream.stream.predict_stage import TilePublisher
from trajstream.stream.risk_process import Answer, ConflictRunner
from trajstream.stream.vehicles import VehicleStage

log = logging.getLogger(__name__)

__all__ = ["CommitCut", "Engine", "Outputs"]


@dataclass
class Outputs:
    """Messages produced by one call: (key, value) pairs ready for the sinks, in order."""

    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    predictions: list[tuple[bytes, bytes]] = field(default_factory=list)
    # records admission dropped late, future or ahead, for the dead-letter sink: (row of
    # the batch's input, reason, detail, None) or (-1, reason, detail, the record as JSON)
    dropped: list[tuple[int, str, str, bytes | None]] = field(default_factory=list)
    # (partition, key, value) for the internal topic (--stage predict)
    internal: list[tuple[int, bytes, bytes]] = field(default_factory=list)

    def extend(self, other: Outputs) -> None:
        self.alerts.extend(other.alerts)
        self.predictions.extend(other.predictions)
        self.dropped.extend(other.dropped)
        self.internal.extend(other.internal)


class CommitCut:
    """A commit point (:meth:`Engine.cut`): the vehicle states as they were there, and the
    conflict stage's answer (episodes) once the risk process has caught up with it."""

    def __init__(self, answer: Answer, states: VehicleRows | None = None,
                 changed: np.ndarray | None = None, gone: list[tuple[str, int]] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        self._answer, self._states, self._changed = answer, states, changed
        self._gone, self._meta = gone or [], meta or {}

    @property
    def ready(self) -> bool:
        """The assessments before the point are done (their alerts can be collected)."""
        return self._answer.ready

    def result(self) -> Checkpoint:
        """The checkpoint (waiting for the answer): the vehicles changed since the previous
        point, in the state store or in their episodes."""
        changed_ids, episodes, prev_t = self._answer.result()
        vs = self._states
        if vs is None or self._changed is None:
            return Checkpoint(meta=self._meta)
        index = {v: i for i, v in enumerate(vs.ids)}

        def take(rows: Sequence[int]) -> VehicleRows:
            ids = [vs.ids[i] for i in rows]
            return VehicleRows(ids, [vs.partitions[i] for i in rows], [vs.slots[i] for i in rows],
                               vs.rows[rows], vs.rec[rows],
                               {v: e for v in ids if (e := episodes.get(v)) is not None})

        more = np.fromiter((index[v] for v in changed_ids if v in index), dtype=np.int64)
        return Checkpoint(take(np.union1d(self._changed, more).tolist()), self._gone,
                          {**self._meta, "prev_t": prev_t},
                          lambda ids: take([index[v] for v in ids if v in index]))


class Engine:
    """Event-time stream core (see the module docstring for the rules).

    ``process`` takes one decoded micro-batch and returns what became final because of it;
    ``flush`` releases everything still buffered (end of input). ``seq0`` numbers the records
    of a batch (``seq0 + batch.index``) so the caller can tell, via :attr:`min_pending_seq`,
    which input records still wait in the buffer and must not be committed yet.

    With a ``publisher`` (stream/predict_stage.py, ``--stage predict``) each tick's predicted
    kinematics go to :attr:`Outputs.internal` instead of the conflict stage.

    ``risk_process``: the conflict stage runs in a child process, beside the vehicle stage
    (stream/risk_process.py). The alerts are the same; a call returns those of the
    assessments finished by then, :meth:`settle` waits for the rest. :meth:`close` stops
    the process.
    """

    def __init__(
        self,
        config: EngineConfig,
        predictor: Predictor,
        metrics: Any = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        publisher: TilePublisher | None = None,
        risk_process: bool = False,
    ) -> None:
        keep_temporaries_in_heap()  # see stream/allocator.py: ~30% of the risk stage
        self.config = config
        self.publisher = publisher
        self.spec = config.spec
        self.metrics = metrics
        self.vehicles = VehicleStage(config, predictor, metrics)
        self.admission = Admission(config, metrics, wall_clock=wall_clock)
        self.conflicts = ConflictRunner(self.spec, predictor.name, config.risk,
                                        config.episodes, metrics,
                                        in_process=risk_process and publisher is None)
        self._dt = float(config.tick_s)
        self._per_risk = config.ticks_per_risk
        self._ticks = 0
        self._ticks_at_reset = 0  # ticks when the position was last reset

    # -- public ----------------------------------------------------------------------------

    def __len__(self) -> int:
        """Vehicles held."""
        return len(self.vehicles)

    @property
    def predictor(self) -> Predictor:
        return self.vehicles.predictor

    @property
    def store(self) -> Any:
        """The vehicle states (stream/state.py)."""
        return self.vehicles.store

    @property
    def errors(self) -> Any:
        """The online prediction error (stream/online_error.py)."""
        return self.vehicles.errors

    @property
    def newest_applied_ts(self) -> float:
        """Newest event time applied to the vehicle states."""
        return self.vehicles.newest_applied_ts

    @property
    def stats(self) -> dict[str, int]:
        """Counters of every stage (records, drops by reason, ticks, alerts, evictions)."""
        return {**self.admission.stats, "ticks": self._ticks, **self.conflicts.stats,
                **self.vehicles.stats}

    @property
    def min_pending_seq(self) -> int | None:
        """Smallest ``seq`` of a record still buffered (None when nothing waits)."""
        return self.admission.min_pending_seq

    @property
    def pending_by_partition(self) -> dict[int, int]:
        """Per input partition, the smallest ``seq`` of its records still buffered (the
        offsets to commit, see :meth:`Admission.pending_by_partition`)."""
        return self.admission.pending_by_partition()

    @property
    def watermark_tick(self) -> int | None:
        return self.admission.done

    def process(
        self,
        batch: PositionBatch,
        seq0: int = 0,
        *,
        partitions: np.ndarray | None = None,
        blocking: Collection[int] | None = None,
    ) -> Outputs:
        """Admit one micro-batch and release every tick the watermark now allows.

        ``partitions`` (per row of ``batch``) and ``blocking`` (partitions that still have
        records to deliver, e.g. Kafka partitions with consumer lag) let a consumer catching
        up on several partitions at once hold the watermark at the slowest of them instead
        of dropping everything the others have overtaken. Without them the input is one
        ordered stream.
        """
        upto = self.admission.admit(batch, seq0, partitions, blocking)
        out = self._release(upto)
        out.dropped = self.admission.dropped
        out.alerts = self.conflicts.collect()
        return out

    @property
    def assessing(self) -> bool:
        """Assessments running (in the risk process) or alerts not yet returned."""
        return self.conflicts.busy

    def settle(self, *, wait: bool = True) -> Outputs:
        """The alerts of every assessment still running (in the risk process); without
        ``wait``, of those finished so far."""
        return Outputs(alerts=self.conflicts.collect(wait=wait))

    def flush(self) -> Outputs:
        """Release every buffered record (end of input)."""
        self.admission.finish()
        upto = self.admission.flush_bound()
        out = Outputs() if upto is None else self._release(upto)
        out.alerts = self.conflicts.collect(wait=True)
        return out

    def close(self) -> None:
        """Stop the risk process, if any (alerts not settled are lost)."""
        self.conflicts.close()

    @property
    def risk_in_process(self) -> bool:
        """Whether the conflict stage runs in a child process."""
        return self.conflicts.in_process

    @property
    def risk_process_cpu_s(self) -> float:
        """CPU seconds of the risk process (0 inline), as of :meth:`close`."""
        return self.conflicts.cpu_s

    # -- ticks -----------------------------------------------------------------------------

    def _release(self, upto: int) -> Outputs:
        out = Outputs()
        rel = self.admission.release(upto)
        if rel is None:
            return out
        recs, ids, ticks = rel.recs, rel.ids, rel.ticks
        vehicles, conflicts, publisher = self.vehicles, self.conflicts, self.publisher
        k = rel.first
        i, m = 0, ticks.shape[0]
        dt = self._dt
        stale_after = self.config.stale_after_s
        while True:
            next_rec_tick = int(ticks[i]) if i < m else None
            if k is None:
                if next_rec_tick is None:
                    break
                k = next_rec_tick
            if k > upto:
                break
            t = k * dt
            # Skip ticks with nothing to do: no records and nobody recent enough for risk.
            if (next_rec_tick is None or next_rec_tick > k) and not (
                vehicles.newest_applied_ts > t - stale_after
            ):
                if next_rec_tick is None:
                    break
                k = next_rec_tick
                continue
            j = i
            if next_rec_tick == k:
                j = int(np.searchsorted(ticks, k, side="right"))
                vehicles.apply({c: v[i:j] for c, v in recs.items()}, ids[i:j], out.predictions)
            i = j
            gone = vehicles.evict(t)
            if gone:
                conflicts.forget(gone)
            if publisher is None:
                if k % self._per_risk == 0:
                    conflicts.assess(vehicles.predicted(t))
                else:
                    conflicts.assess_watched(t, vehicles.predicted)
            else:
                out.internal.extend(publisher.publish(k, vehicles.predicted(t)))
            self._ticks += 1
            k += 1
        if self.metrics is not None:
            self.metrics.active_vehicles.set(len(vehicles))
        return out

    # -- checkpoints (stream/checkpoint.py) --------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """What changed since the previous call, and the event-time position (waits for the
        risk process to catch up: :meth:`cut` does not)."""
        return self.cut().result()

    def cut(self, *, states: bool = True) -> CommitCut:
        """A commit point here, its conflict-stage half still to come from the risk process.

        Everything handed to :meth:`process` so far is either applied (in the state) or
        still buffered (read again after a restart). The vehicle states are copied now,
        all live ones (the changelog writes whole shards, which need the unchanged vehicles
        beside the changed ones), so the loop can go on stepping them while the assessments
        before this point finish. ``states=False``: only the point (no changelog to write).
        """
        answer = self.conflicts.ask("cut")
        if not states:
            return CommitCut(answer)
        store = self.store
        changed, gone = store.take_changes()
        live = np.flatnonzero(store.used[: store.high])
        rows, rec = store.export_rows(live)
        ids = [store.ids[s] for s in live.tolist()]
        meta = {
            **self.admission.meta(),
            "next_evict": self.vehicles.next_evict, "newest": self.vehicles.newest_applied_ts,
            "prev_t": None, "tick_s": self._dt, "model": self.vehicles.model_id,
        }
        states_now = VehicleRows(ids, store.partition[live].tolist(), live.tolist(), rows, rec)
        return CommitCut(answer, states_now, np.searchsorted(live, changed), gone, meta)

    def restore(self, vehicles: list[VehicleState], metas: dict[int, dict[str, Any]]) -> None:
        """Load states and event-time positions read back from the changelog; ``metas`` has
        an entry per restored partition (empty when the changelog has none for it).

        A fresh engine (new, or after :meth:`reset`) takes the released tick of the restored
        partitions (the earliest when they differ; none when one of them has none); a
        running one that gains partitions keeps its own and only adds their vehicles.
        """
        stage = self.vehicles
        # Fresh: nothing applied since start or :meth:`reset`.
        fresh = self.admission.done is None or (
            self._ticks == self._ticks_at_reset and not len(stage) and not len(self.admission))
        if vehicles:
            ids = [v.vehicle_id for v in vehicles]
            slots = stage.restore(ids, [v.slot for v in vehicles],
                                  np.stack([v.row for v in vehicles]),
                                  self._recurrent_states(vehicles, metas))
            store = stage.store
            self.admission.remember(ids, store.last_ts[slots].tolist(),
                                    store.kin.hist_t[slots, -2].tolist(),
                                    store.partition[slots].tolist())
            self.conflicts.call("restore", {v.vehicle_id: v.episodes or {} for v in vehicles})
        if metas:
            # The newest event times seen ("max_ts", "part_max") are NOT restored: they
            # describe how far the previous owner had read, past the committed offsets, and
            # the records in between are read again. Restored, they would put the watermark
            # ahead of those records and drop the held-back ones as "late"; re-reading
            # rebuilds them instead.
            for m in metas.values():
                stage.newest_applied_ts = max(stage.newest_applied_ts,
                                              m.get("newest", -math.inf))
            # Resume at the earliest released tick only when every restored partition has
            # one. A partition without (an empty meta: its previous owner released nothing
            # of it or never committed; or at or below NO_TICK, written by versions that
            # released the "no event time yet" tick) has all its records from the committed
            # offset still to release: resumed past them, they would all be dropped late
            # (and at NO_TICK the next release would walk every tick from there, for good).
            # So the engine starts at the first record instead; the ticks it re-runs leave
            # out the vehicles whose state is already past them (VehicleStage.predicted).
            done = [m for m in metas.values()
                    if m.get("done") is not None and int(m["done"]) > NO_TICK]
            if fresh and done and len(done) == len(metas):
                first = min(done, key=lambda m: int(m["done"]))
                late = first.get("late_upto")
                def tick(k: Any) -> int:
                    return restored_tick(first, k, self._dt, self.config.risk_interval_s)
                self.admission.resume(tick(first["done"]), None if late is None else tick(late))
                stage.next_evict = first.get("next_evict", -math.inf)
                if first.get("prev_t") is not None:
                    self.conflicts.call("restore", {}, float(first["prev_t"]))
        if self.metrics is not None:
            self.metrics.active_vehicles.set(len(stage))

    def _recurrent_states(self, vehicles: list[VehicleState],
                          metas: dict[int, dict[str, Any]]) -> np.ndarray:
        """The restored vehicles' recurrent states, zeros (a new vehicle's) where their
        partition's checkpoint names another model (other --weights or --predictor): another
        network's h/c mean nothing to this one. Checkpoints that name none are taken as ours."""
        ours = self.vehicles.model_id
        foreign = {p for p, m in metas.items() if m.get("model", ours) != ours}
        if not foreign:
            return np.stack([v.rec for v in vehicles])
        zero = np.zeros(self.vehicles.store.state_dim, np.float32)
        rec = [zero if v.partition in foreign else v.rec for v in vehicles]
        log.warning("partition(s) %s: the changelog's state of %d vehicle(s) was written by "
                    "model %s, this process runs %s: their recurrent state starts over "
                    "(their track, alerts and event time are kept)", sorted(foreign),
                    sum(v.partition in foreign for v in vehicles),
                    metas[min(foreign)]["model"], ours)
        return np.stack(rec)

    def reset(self) -> list[str]:
        """Forget every vehicle, buffered record and the event-time position (keeps the
        counters); returns the dropped ids.

        For a consumer that lost all its partitions (an eager rebalance revokes them all):
        its next assignment is then restored like a restart, the released tick taken from
        the changelog. Keeping the old clock instead would judge the re-read records against
        a watermark that had moved past the committed offsets.
        """
        ids = self.vehicles.drop_all()
        self.conflicts.call("reset")
        self.admission.reset()
        self._ticks_at_reset = self._ticks
        if self.metrics is not None:
            self.metrics.active_vehicles.set(len(self.vehicles))
        return ids

    def drop_partitions(self, parts: Collection[int]) -> list[str]:
        """Forget the state and buffered records of ``parts`` (revoked); returns the ids.

        Their changelog records stay: the partitions' new owner restores them.
        """
        ids = self.vehicles.drop_partitions(parts)
        if ids:
            self.conflicts.forget(ids)
        self.admission.drop_partitions(parts, ids)
        return ids

    def summary(self) -> dict[str, Any]:
        """Counters and the mean online prediction error so far (for logs and the demo)."""
        return {
            **self.stats,
            "vehicles": len(self.store),
            "resets": self.store.resets,
            "pending": len(self.admission),
            "error_m": self.errors.mean_m(),
        }
