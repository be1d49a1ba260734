"""What a state checkpoint holds and how it is encoded for the changelog topic (pure, no I/O).

The changelog is a compacted topic with the positions topic's partition count; a vehicle's
state goes to the partition its positions came from, so a consumer that is assigned input
partition p restores exactly changelog partition p. Two kinds of record:

- key ``shard_key(s, n)``: the whole state of every vehicle of shard ``s`` of the
  partition's ``n`` shards (a vehicle's shard is a hash of its id, :func:`shard_of`): slot
  arrays incl. LSTM h/c, kinematics, last observation and event time, latest path, as raw
  float64/float32 bytes (bit-exact), plus the alert episodes and unconfirmed conflicts of
  the pairs each owns (the pair's lower id owns them). One record holds about a hundred
  vehicles (:func:`encode_shard`), so a commit sends tens of records, not one per vehicle:
  each record costs the Kafka client about as much as a position does. A shard whose
  vehicles changed is written whole; an emptied one gets a tombstone (value None), which
  compaction then removes. stream/changelog.py keeps the shard count in step with the
  partition's fleet.
- key ``META_PREFIX + "<p>"`` (one per input partition p): the engine's event-time
  position as seen from that partition: the last
  released tick, the newest event time seen (overall and in that partition), the next
  eviction time and the episode tracker's latest assessment time. These are not
  per-vehicle, and without them a restarted engine would re-run or skip ticks. Also the
  model that wrote the recurrent states (``model``): under another, they start over.

Changelogs written before the shards (one record per vehicle, key ``vehicle_id``, a JSON
object with base64 arrays) are read too; the writer replaces them with shards at the first
commit after the restore and tombstones their keys.

A checkpoint is taken at every commit point, after the engine has processed every record
handed out, and written (flushed) before the input offsets are committed. Input records
after the committed offset are read again after a crash: the ones already applied are at
or before their vehicle's restored last event time (dropped ``stale``) or in a released tick
(dropped ``late``); the ones that were still held back are accepted again. So every record
takes effect exactly once and a restarted run produces the same alerts (deterministic
``alert_id``) and predictions as an uninterrupted one. A crash in the middle of writing a
commit leaves each shard at its old or its new state; a vehicle found in two shards (the
shard count changed in that commit) is taken from the one written last.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

__all__ = ["META_PREFIX", "SHARD_PREFIX", "Checkpoint", "VehicleRows", "VehicleState", "decode",
           "decode_shard", "encode_meta", "encode_shard", "meta_key", "restored_tick",
           "shard_key", "shard_of"]

# Meta keys start with a byte that never occurs in UTF-8, so no vehicle id (always UTF-8
# encoded) can collide with them; one key per partition, so compaction keeps every
# partition's meta (a shared key kept only the last partition written).
META_PREFIX = b"\xffmeta:"
SHARD_PREFIX = b"\xffvehicles:"  # likewise for the shard records
_LEGACY_META_KEY = b"__meta__"  # changelogs written before per-partition keys
_VERSION = 2  # 1: a record per vehicle (still read)


@dataclass(frozen=True, slots=True)
class VehicleState:
    vehicle_id: str
    partition: int
    slot: int
    row: np.ndarray  # float64, StateStore.export_rows layout
    rec: np.ndarray  # float32 recurrent state
    episodes: dict[str, Any] | None = None


@dataclass(frozen=True)
class VehicleRows:
    """Vehicles' states as columns, one row each: what a checkpoint writes. Columnar so the
    changelog encodes a commit's thousands of states in a few numpy passes (see
    :func:`encode_vehicles`); iterating gives :class:`VehicleState` s."""

    ids: list[str] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # float64
    rec: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    episodes: dict[str, Any] = field(default_factory=dict)  # by id; absent: None

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[VehicleState]:
        for i, (v, p, s) in enumerate(zip(self.ids, self.partitions, self.slots, strict=True)):
            yield VehicleState(v, p, s, self.rows[i], self.rec[i], self.episodes.get(v))


@dataclass
class Checkpoint:
    """The engine's changes since the previous checkpoint, and its event-time position."""

    vehicles: VehicleRows = field(default_factory=VehicleRows)
    tombstones: list[tuple[str, int]] = field(default_factory=list)  # (vehicle_id, partition)
    meta: dict[str, Any] = field(default_factory=dict)  # "part_max": {partition: ts}, ...
    # The current state of live vehicles by id (unknown ids left out): the changelog writes
    # whole shards, so it also needs the unchanged vehicles of a shard that changed.
    export: Callable[[Sequence[str]], VehicleRows] | None = None


def shard_of(vehicle_id: str, shards: int) -> int:
    """The shard of ``vehicle_id`` among ``shards`` (a power of two); stable across runs."""
    return zlib.crc32(vehicle_id.encode()) & (shards - 1)


def shard_key(shard: int, shards: int) -> bytes:
    """The changelog key of shard ``shard`` of ``shards``. The count is part of the key, so
    a partition re-sharded to another count never overwrites a record it still needs."""
    return SHARD_PREFIX + b"%d/%d" % (shard, shards)


def encode_shard(vs: VehicleRows) -> bytes:
    """The changelog value of a shard's vehicles: one JSON line (version, ids, slots, row
    widths, episodes by id), then every float64 row and every float32 recurrent state, raw.
    """
    rows = np.ascontiguousarray(vs.rows, dtype=np.float64)
    rec = np.ascontiguousarray(vs.rec, dtype=np.float32)
    eps = {v: e for v in vs.ids if (e := vs.episodes.get(v)) is not None}
    head = orjson.dumps({"v": _VERSION, "ids": vs.ids, "s": vs.slots, "w": rows.shape[1],
                         "r": rec.shape[1], "ep": eps})
    return b"".join((head, b"\n", rows.data, rec.data))


def decode_shard(value: bytes, partition: int) -> list[VehicleState]:
    """The vehicles of one :func:`encode_shard` value (ValueError if it does not add up)."""
    head, _, body = value.partition(b"\n")
    d = orjson.loads(head)
    ids, n, w, r = d["ids"], len(d["ids"]), int(d["w"]), int(d["r"])
    if d.get("v") != _VERSION or len(body) != n * (8 * w + 4 * r) or len(d["s"]) != n:
        raise ValueError(f"changelog shard record of version {d.get('v')} with {n} vehicles "
                         f"has {len(body)} bytes of state, expected {n * (8 * w + 4 * r)}")
    rows = np.frombuffer(body, dtype=np.float64, count=n * w).reshape(n, w)
    rec = np.frombuffer(body, dtype=np.float32, offset=8 * n * w).reshape(n, r)
    eps = d["ep"]
    return [VehicleState(v, partition, int(s), rows[i], rec[i], eps.get(v))
            for i, (v, s) in enumerate(zip(ids, d["s"], strict=True))]


def meta_key(partition: int) -> bytes:
    """The changelog key of input partition ``partition``'s meta record."""
    return META_PREFIX + str(int(partition)).encode()


def restored_tick(meta: dict[str, Any], k: Any, tick_s: float, legacy_tick_s: float) -> int:
    """Tick number ``k`` of a changelog ``meta`` in ticks of ``tick_s``. The meta says its
    own step (``tick_s``); one written before the key existed counted in ``legacy_tick_s``
    (the risk interval then). Tick k covers ``((k-1) dt, k dt]``, so tick k of a coarser
    step ends where tick ``k * ratio`` of a finer one does."""
    ratio = float(meta.get("tick_s", legacy_tick_s)) / tick_s
    return int(math.floor(int(k) * ratio + 1e-6))


def encode_meta(meta: dict[str, Any], partition: int) -> bytes:
    """The meta record of one partition (``part_max`` narrowed to that partition, and the
    partition's entry of ``per_partition`` merged in)."""
    d = {k: v for k, v in meta.items() if k not in ("part_max", "per_partition")}
    d["part_max"] = meta.get("part_max", {}).get(partition)
    d.update(meta.get("per_partition", {}).get(partition, {}))
    d["v"] = _VERSION
    return orjson.dumps(d, option=orjson.OPT_SERIALIZE_NUMPY)


def _num(x: Any) -> float:
    return float("-inf") if x is None else float(x)


def decode(records: list[tuple[bytes | None, bytes | None, int]]
           ) -> tuple[list[VehicleState], dict[int, dict[str, Any]]]:
    """Latest state per key from changelog records ``(key, value, partition)`` in log order.

    Tombstones remove their key. Returns the vehicles and the meta record per partition.
    A vehicle in two records of its partition (a crash while its shard count changed) is
    taken from the later one. Records of a vehicle each (before the shards) are read as
    before; a legacy ``__meta__`` record (one key shared by all partitions, so a key per
    changelog partition here) is read as its partition's meta unless that partition has a
    new one.
    """
    latest: dict[tuple[bytes, int], tuple[int, bytes | None]] = {}
    for i, (key, value, part) in enumerate(records):
        if key is not None:
            latest[(key, part)] = (i, value)
    found: dict[tuple[str, int], tuple[int, VehicleState]] = {}
    metas: dict[int, dict[str, Any]] = {}
    legacy: dict[int, dict[str, Any]] = {}
    for (key, part), (i, value) in sorted(latest.items(), key=lambda kv: kv[1][0]):
        if value is None:
            continue
        if key.startswith(SHARD_PREFIX):
            for v in decode_shard(value, part):
                found[(v.vehicle_id, part)] = (i, v)
            continue
        d = orjson.loads(value)
        is_legacy = key == _LEGACY_META_KEY and "row" not in d
        if key.startswith(META_PREFIX) or is_legacy:
            for k in ("max_ts", "part_max", "next_evict", "newest"):  # null: -inf
                d[k] = _num(d.get(k))
            (legacy if is_legacy else metas)[part] = d
            continue
        vid = key.decode()
        found[(vid, part)] = (i, VehicleState(
            vid, int(d["p"]), int(d["s"]),
            np.frombuffer(base64.b64decode(d["row"]), dtype=np.float64),
            np.frombuffer(base64.b64decode(d["rec"]), dtype=np.float32),
            d.get("ep"),
        ))
    for part, d in legacy.items():
        metas.setdefault(part, d)
    return [v for _, v in found.values()], metas
