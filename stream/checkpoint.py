"""What a state checkpoint holds and how it is encoded for the changelog topic (pure, no I/O).

The changelog is a compacted topic with the positions topic's partition count; a vehicle's
record goes to the partition its positions came from, so a consumer that is assigned input
partition p restores exactly changelog partition p. Two kinds of record:

- key ``vehicle_id``: the vehicle's whole state (slot arrays incl. LSTM h/c, kinematics,
  last observation and event time, latest path) as raw float64/float32 bytes (bit-exact),
  plus the alert episodes and unconfirmed conflicts of the pairs it owns (the pair's lower
  id owns them). Only vehicles changed since the previous checkpoint are written; an
  evicted vehicle gets a tombstone (value None), which compaction then removes.
- key ``META_PREFIX + "<p>"`` (one per input partition p): the engine's event-time
  position as seen from that partition: the last
  released tick, the newest event time seen (overall and in that partition), the next
  eviction time and the episode tracker's latest assessment time. These are not
  per-vehicle, and without them a restarted engine would re-run or skip ticks.

A checkpoint is taken at every commit point, after the engine has processed every record
handed out, and written (flushed) before the input offsets are committed. Input records
after the committed offset are read again after a crash: the ones already applied are at
or before their vehicle's restored last event time (dropped ``stale``) or in a released tick
(dropped ``late``); the ones that were still held back are accepted again. So every record
takes effect exactly once and a restarted run produces the same alerts (deterministic
``alert_id``) and predictions as an uninterrupted one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

__all__ = ["META_PREFIX", "Checkpoint", "VehicleRows", "VehicleState", "decode", "encode_meta",
           "encode_vehicle", "encode_vehicles", "meta_key"]

# Meta keys start with a byte that never occurs in UTF-8, so no vehicle id (always UTF-8
# encoded) can collide with them; one key per partition, so compaction keeps every
# partition's meta (a shared key kept only the last partition written).
META_PREFIX = b"\xffmeta:"
_LEGACY_META_KEY = b"__meta__"  # changelogs written before per-partition keys
_VERSION = 1


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


def _row_bytes(a: np.ndarray, dtype: type) -> tuple[memoryview, int]:
    """The raw bytes of a 2-D array's rows as one buffer, and the width of a row in it."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return a.reshape(-1).data.cast("B"), a.shape[1] * a.itemsize


def encode_vehicles(vs: VehicleRows) -> list[bytes]:
    """The changelog value of every vehicle in ``vs``: the JSON object
    ``{"v", "p", "s", "row", "rec", "ep"}`` with the state arrays base64-encoded.

    One formatting step per vehicle over slices of two shared buffers, not a dict and an
    ``orjson.dumps`` each (a commit writes every vehicle that moved: thousands); the bytes
    are what ``orjson.dumps`` of that dict gives.
    """
    b64 = binascii.b2a_base64
    rows, wr = _row_bytes(vs.rows, np.float64)
    rec, wc = _row_bytes(vs.rec, np.float32)
    eps, dumps = vs.episodes, orjson.dumps
    fmt = b'{"v":%d,' % _VERSION + b'"p":%d,"s":%d,"row":"%s","rec":"%s","ep":%s}'
    return [
        fmt % (p, s, b64(rows[i * wr:(i + 1) * wr], newline=False),
               b64(rec[i * wc:(i + 1) * wc], newline=False),
               b"null" if (ep := eps.get(v)) is None else dumps(ep))
        for i, (v, p, s) in enumerate(zip(vs.ids, vs.partitions, vs.slots, strict=True))
    ]


def encode_vehicle(v: VehicleState) -> bytes:
    """One vehicle's changelog value (see :func:`encode_vehicles`)."""
    return encode_vehicles(VehicleRows(
        [v.vehicle_id], [v.partition], [v.slot], v.row.reshape(1, -1), v.rec.reshape(1, -1),
        {} if v.episodes is None else {v.vehicle_id: v.episodes}))[0]


def meta_key(partition: int) -> bytes:
    """The changelog key of input partition ``partition``'s meta record."""
    return META_PREFIX + str(int(partition)).encode()


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
    A legacy ``__meta__`` record (one key shared by all partitions, so a key per changelog
    partition here) is read as its partition's meta unless that partition has a new one.
    """
    latest: dict[tuple[bytes, int], bytes | None] = {}
    for key, value, part in records:
        if key is not None:
            latest[(key, part)] = value
    vehicles: list[VehicleState] = []
    metas: dict[int, dict[str, Any]] = {}
    legacy: dict[int, dict[str, Any]] = {}
    for (key, part), value in latest.items():
        if value is None:
            continue
        d = orjson.loads(value)
        is_legacy = key == _LEGACY_META_KEY and "row" not in d
        if key.startswith(META_PREFIX) or is_legacy:
            for k in ("max_ts", "part_max", "next_evict", "newest"):  # null: -inf
                d[k] = _num(d.get(k))
            (legacy if is_legacy else metas)[part] = d
            continue
        vehicles.append(VehicleState(
            key.decode(), int(d["p"]), int(d["s"]),
            np.frombuffer(base64.b64decode(d["row"]), dtype=np.float64),
            np.frombuffer(base64.b64decode(d["rec"]), dtype=np.float32),
            d.get("ep"),
        ))
    for part, d in legacy.items():
        metas.setdefault(part, d)
    return vehicles, metas
