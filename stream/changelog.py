"""The state changelog on Kafka: write checkpoints, read them back on partition assignment.

Record layout and the recovery argument are in stream/checkpoint.py. The topic (default
``<group>-changelog``) is compacted and has the positions topic's partition count; a
vehicle's state goes to the partition number its positions come from, and every owned
partition gets its own meta record (key ``checkpoint.meta_key(p)``), so restoring input
partition p means reading changelog partition p from the beginning to its end.

Vehicles are written in shards (a record per shard holds all its vehicles): the writer
knows which vehicles each shard of each partition holds, rewrites the shards whose vehicles
changed and keeps about :data:`PER_SHARD` vehicles a shard by doubling or halving a
partition's shard count as its fleet grows or shrinks (then every shard is rewritten under
the new count and the old keys tombstoned). A restored partition is rewritten whole at the
next commit, which also replaces a changelog of the older per-vehicle records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trajstream.errors import KafkaUnavailable
from trajstream.stream import checkpoint as ck

__all__ = ["TOPIC_CONFIG", "Changelog"]

log = logging.getLogger("trajstream.stream.changelog")

# How the processor creates a changelog topic (an existing one keeps its settings). The
# cleaner never touches a partition's active segment, and Kafka rolls one only after
# segment.bytes (1 GiB) or segment.ms (7 days): a changelog written every commit interval
# would keep every version of every vehicle for days, and a restore would read them all.
# Rolling every minute keeps a partition near its live state plus a minute or two of writes
# (the cleaner takes a rolled segment once it is at least half of the log, within about
# 15 s, its default back-off).
SEGMENT_MS = 60_000
TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": str(SEGMENT_MS)}

RESTORE_ATTEMPTS = 10
RESTORE_BACKOFF_S = 0.5
# Vehicles a shard record holds on average, at most: 128 LSTM states are ~150 kB, well
# inside Kafka's 1 MB default record size even at 4x (a shard count halves below a quarter).
PER_SHARD = 128


@dataclass
class _Shards:
    """One partition's shards: which vehicles each holds, and the keys the topic has."""

    count: int = 1
    members: list[set[str]] = field(default_factory=lambda: [set()])
    live: set[bytes] = field(default_factory=set)  # keys with a value in the topic
    rewrite: bool = True  # every shard at the next write (restored, or re-sharded)

    def place(self, vehicle_id: str) -> int:
        s = ck.shard_of(vehicle_id, self.count)
        self.members[s].add(vehicle_id)
        return s

    def remove(self, vehicle_id: str) -> int:
        s = ck.shard_of(vehicle_id, self.count)
        self.members[s].discard(vehicle_id)
        return s

    def resize(self) -> None:
        """Double or halve the shard count when the fleet left ``PER_SHARD`` per shard far
        behind (hysteresis: a fleet at a boundary does not re-shard back and forth)."""
        n, count = sum(map(len, self.members)), self.count
        while n > PER_SHARD * count:
            count *= 2
        while count > 1 and n < PER_SHARD * count // 4:
            count //= 2
        if count != self.count:
            everyone = set().union(*self.members)
            self.count, self.members = count, [set() for _ in range(count)]
            for v in everyone:
                self.place(v)
            self.rewrite = True


class Changelog:
    """Writes :class:`~stream.checkpoint.Checkpoint` s with ``producer`` and restores them."""

    def __init__(self, producer: Any, topic: str, *, bootstrap: str, client: str,
                 partitions: int, read_committed: bool = False,
                 client_config: Mapping[str, Any] | None = None,
                 admin_config: Mapping[str, Any] | None = None) -> None:
        self.topic = topic
        self._client_config = dict(client_config or {})  # connection (security) settings
        self._admin_config = dict(admin_config or client_config or {})
        self.partitions = partitions
        self._p = producer
        self._bootstrap = bootstrap
        self._client = client
        self._read_committed = read_committed
        self._shards: dict[int, _Shards] = {}  # by owned partition

    def write(self, cp: ck.Checkpoint, owned: Collection[int]) -> int:
        """Queue the checkpoint's records (per partition its changed shards, then tombstones
        of keys it no longer uses, then one meta record per owned partition); the caller
        flushes (or commits the transaction). Returns the number of records.

        A record the producer refuses at once (too large, an unknown partition) raises, and
        the commit is retried later. The changes that record held were already taken from
        the engine, so the next write rewrites every shard: a retry with only the newer
        changes could succeed and commit offsets past states the topic never got."""
        try:
            return self._write(cp, owned)
        except BaseException:
            self.rewrite()
            raise

    def rewrite(self) -> None:
        """Write every shard at the next :meth:`write`: changes taken from the engine were
        not written."""
        for shards in self._shards.values():
            shards.rewrite = True

    def _write(self, cp: ck.Checkpoint, owned: Collection[int]) -> int:
        vs = cp.vehicles
        dirty: dict[int, set[int]] = {}
        for vid, p in cp.tombstones:
            if p >= 0 and p in self._shards:
                dirty.setdefault(p, set()).add(self._shards[p].remove(vid))
        for vid, p in zip(vs.ids, vs.partitions, strict=True):
            if p >= 0:
                dirty.setdefault(p, set()).add(self._shards.setdefault(p, _Shards()).place(vid))
        for p in owned:
            if p in self._shards and self._shards[p].rewrite:
                dirty.setdefault(p, set())
        for p in dirty:
            shards = self._shards[p]
            shards.resize()
            if shards.rewrite:
                dirty[p] = set(range(shards.count))
        states, row_of = self._states(cp, [v for p, ss in dirty.items() for s in ss
                                           for v in self._shards[p].members[s]])
        send, topic, n = self._p.send, self.topic, 0
        for p in sorted(dirty):
            shards = self._shards[p]
            keys = set()
            for s in sorted(dirty[p]):
                key = ck.shard_key(s, shards.count)
                members = sorted(v for v in shards.members[s] if v in row_of)
                shards.members[s] = set(members)  # gone from the engine: gone from the shard
                if members:
                    send(topic, ck.encode_shard(_take(states, [row_of[v] for v in members], p)),
                         key, p)
                    keys.add(key)
                    n += 1
                elif key in shards.live:
                    send(topic, None, key, p)
                    n += 1
                shards.live.discard(key)
            if shards.rewrite:  # old shard counts, per-vehicle records of old versions
                for key in sorted(shards.live):
                    send(topic, None, key, p)
                    n += 1
                shards.live.clear()
                shards.rewrite = False
            shards.live |= keys
        for p in sorted(owned):
            send(topic, ck.encode_meta(cp.meta, p), ck.meta_key(p), p)
            n += 1
        return n

    def load(self, records: list[tuple[bytes | None, bytes | None, int]],
             partitions: Collection[int]) -> tuple[list[ck.VehicleState],
                                                    dict[int, dict[str, Any]]]:
        """The vehicles and metas in ``records`` (the changelog partitions ``partitions``
        read to their end); the writer takes over those partitions' shards from them."""
        vehicles, metas = ck.decode(records)
        for p in partitions:
            self._shards[p] = _Shards(live=_live_keys(records, p))
        for v in vehicles:
            if v.partition in self._shards:
                self._shards[v.partition].members[0].add(v.vehicle_id)
        for p in partitions:  # the right count for the fleet, rewritten at the next write
            self._shards[p].resize()
            self._shards[p].rewrite = True
        return vehicles, metas

    @staticmethod
    def _states(cp: ck.Checkpoint, ids: list[str]) -> tuple[ck.VehicleRows, dict[str, int]]:
        """The state of those of ``ids`` the engine still has (the checkpoint's changed
        vehicles, the others exported from the engine), and each one's row in it."""
        vs = cp.vehicles
        known = set(vs.ids)
        rest = [v for v in ids if v not in known]
        if rest and cp.export is not None:
            more = cp.export(rest)
            if len(more):
                vs = ck.VehicleRows(vs.ids + more.ids, vs.partitions + more.partitions,
                                    vs.slots + more.slots, _rows(vs.rows, more.rows),
                                    _rows(vs.rec, more.rec), {**vs.episodes, **more.episodes})
        return vs, {v: i for i, v in enumerate(vs.ids)}

    def forget(self, partitions: Collection[int]) -> None:
        """Partitions revoked: their shards are the new owner's to write."""
        for p in partitions:
            self._shards.pop(p, None)

    def restore(self, partitions: Collection[int]
                ) -> tuple[list[ck.VehicleState], dict[int, dict[str, Any]]]:
        """The latest state of the vehicles and the meta of ``partitions``."""
        from trajstream.stream.kafka import grow_topic, read_to_end

        if partitions and max(partitions) >= self.partitions:
            # the input grew while this process runs: its new partitions get theirs
            log.warning("changelog topic %s has %d partition(s), input partition %d is "
                        "assigned: adding partitions", self.topic, self.partitions,
                        max(partitions))
            self.partitions = grow_topic(self._bootstrap, self.topic, max(partitions) + 1,
                                         client=self._client,
                                         client_config=self._admin_config)
            self._p.await_partitions(self.topic, max(partitions) + 1)
        t0 = time.monotonic()
        for attempt in range(RESTORE_ATTEMPTS):
            try:
                recs = read_to_end(self._bootstrap, self.topic, sorted(partitions),
                                   client=self._client, read_committed=self._read_committed,
                                   client_config=self._client_config)
                break
            except KafkaUnavailable as exc:
                # a topic created moments ago may have no partition leader yet
                if attempt + 1 == RESTORE_ATTEMPTS:
                    raise
                log.info("changelog not readable yet (%s), retrying", exc)
                time.sleep(RESTORE_BACKOFF_S)
        vehicles, metas = self.load(recs, partitions)
        log.info("restored %d vehicle state(s) of partition(s) %s from %d changelog record(s) "
                 "in %.2f s", len(vehicles), sorted(partitions), len(recs),
                 time.monotonic() - t0)
        return vehicles, metas


def _live_keys(records: list[tuple[bytes | None, bytes | None, int]], partition: int
               ) -> set[bytes]:
    """Keys of ``partition`` holding vehicle state (shards, or per-vehicle records of older
    versions) whose latest record is not a tombstone."""
    live: set[bytes] = set()
    for key, value, p in records:
        if p != partition or key is None or key.startswith(ck.META_PREFIX):
            continue
        if value is None:
            live.discard(key)
        else:
            live.add(key)
    live.discard(b"__meta__")  # the legacy shared meta: harmless, superseded
    return live


def _rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` and ``b`` stacked (either may be the empty (0, 0) of a checkpoint without
    vehicles)."""
    return b if not len(a) else a if not len(b) else np.concatenate([a, b])


def _take(vs: ck.VehicleRows, rows: list[int], partition: int) -> ck.VehicleRows:
    """Rows ``rows`` of ``vs``, in that order (one shard's vehicles)."""
    ids = [vs.ids[i] for i in rows]
    eps = {v: e for v in ids if (e := vs.episodes.get(v)) is not None}
    return ck.VehicleRows(ids, [partition] * len(ids), [vs.slots[i] for i in rows],
                          vs.rows[rows], vs.rec[rows], eps)
