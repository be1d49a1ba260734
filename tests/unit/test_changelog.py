"""The changelog writer's shards: a record per shard of vehicles, not per vehicle; shard counts
that follow the fleet; old changelogs (a record per vehicle) replaced at the first commit."""

from __future__ import annotations

import base64
from collections import Counter

import numpy as np
import orjson
import pytest

from trajstream.stream import checkpoint as ck
from trajstream.stream.changelog import PER_SHARD, Changelog

W, R = 5, 3  # row and recurrent state widths


class _Log:
    def __init__(self) -> None:
        self.log: list[tuple[bytes | None, bytes | None, int]] = []

    def send(self, topic: str, value: bytes | None, key: bytes, partition: int) -> None:
        self.log.append((key, value, partition))


class _Fleet:
    """Stands in for the engine: vehicles' states by id, all in partition 0."""

    def __init__(self) -> None:
        self.state: dict[str, float] = {}
        self.changed: set[str] = set()
        self.gone: list[tuple[str, int]] = []

    def move(self, ids: list[str], value: float) -> None:
        for v in ids:
            self.state[v] = value
        self.changed |= set(ids)

    def evict(self, ids: list[str]) -> None:
        for v in ids:
            del self.state[v]
        self.changed -= set(ids)
        self.gone += [(v, 0) for v in ids]

    def rows(self, ids: list[str]) -> ck.VehicleRows:
        ids = [v for v in ids if v in self.state]
        vals = np.array([self.state[v] for v in ids], dtype=np.float64)
        return ck.VehicleRows(ids, [0] * len(ids), list(range(len(ids))),
                              np.repeat(vals[:, None], W, axis=1).reshape(len(ids), W),
                              np.full((len(ids), R), 1.0, np.float32), {})

    def checkpoint(self) -> ck.Checkpoint:
        cp = ck.Checkpoint(self.rows(sorted(self.changed)), self.gone, {"done": 1},
                           self.rows)
        self.changed, self.gone = set(), []
        return cp


def _restored(log: _Log) -> dict[str, float]:
    vehicles, _ = ck.decode(log.log)
    assert len({v.vehicle_id for v in vehicles}) == len(vehicles)
    return {v.vehicle_id: float(v.row[0]) for v in vehicles}


def _kinds(records: list[tuple[bytes | None, bytes | None, int]]) -> Counter[str]:
    return Counter("meta" if k.startswith(ck.META_PREFIX) else
                   ("shard" if v is not None else "tombstone") for k, v, _ in records)


def test_a_commit_sends_a_record_per_shard_and_only_the_changed_shards():
    fleet, log = _Fleet(), _Log()
    cl = Changelog(log, "cl", bootstrap="-", client="-", partitions=1)
    ids = [f"veh-{i}" for i in range(3 * PER_SHARD)]
    fleet.move(ids, 1.0)
    cl.write(fleet.checkpoint(), [0])
    assert _kinds(log.log) == {"shard": 4, "meta": 1}  # 384 vehicles, 4 shards of ~96
    assert _restored(log) == dict.fromkeys(ids, 1.0)

    n = len(log.log)
    fleet.move(["veh-7"], 2.0)
    cl.write(fleet.checkpoint(), [0])
    assert _kinds(log.log[n:]) == {"shard": 1, "meta": 1}
    assert _restored(log) == {**dict.fromkeys(ids, 1.0), "veh-7": 2.0}


def test_after_a_refused_record_the_next_write_rewrites_every_shard():
    """A shard the producer refused at send (message.max.bytes below its size) held changes
    already taken from the engine. The retry sent only the newer, smaller changes; it went
    through and the commit moved the offsets past states the topic never had (found with
    --producer-option message.max.bytes=5000: 'Kafka available again', then the run idled
    instead of stopping after --max-stall-s)."""
    fleet, log = _Fleet(), _Log()
    cl = Changelog(log, "cl", bootstrap="-", client="-", partitions=1)
    ids = [f"veh-{i}" for i in range(3 * PER_SHARD)]
    fleet.move(ids, 1.0)
    cl.write(fleet.checkpoint(), [0])
    fleet.move(ids, 2.0)  # every shard changed; the first send is refused

    class _Refusing(_Log):
        def send(self, topic: str, value: bytes | None, key: bytes, partition: int) -> None:
            raise RuntimeError("Message size too large")

    cl._p = _Refusing()
    with pytest.raises(RuntimeError):
        cl.write(fleet.checkpoint(), [0])
    cl._p = log
    n = len(log.log)
    fleet.move(["veh-7"], 3.0)
    cl.write(fleet.checkpoint(), [0])
    assert _kinds(log.log[n:]) == {"shard": 4, "meta": 1}
    assert _restored(log) == {**dict.fromkeys(ids, 2.0), "veh-7": 3.0}


def test_the_shard_count_follows_the_fleet_and_old_keys_are_tombstoned():
    fleet, log = _Fleet(), _Log()
    cl = Changelog(log, "cl", bootstrap="-", client="-", partitions=1)
    small = [f"a{i}" for i in range(50)]
    fleet.move(small, 1.0)
    cl.write(fleet.checkpoint(), [0])
    assert [k for k, _, _ in log.log][0] == ck.shard_key(0, 1)

    big = [f"b{i}" for i in range(5 * PER_SHARD)]  # 690 vehicles: 8 shards
    fleet.move(big, 2.0)
    n = len(log.log)
    cl.write(fleet.checkpoint(), [0])
    new = log.log[n:]
    assert _kinds(new) == {"shard": 8, "tombstone": 1, "meta": 1}
    assert new[-2][:2] == (ck.shard_key(0, 1), None)  # after the new shards: crash-safe
    assert _restored(log) == {**dict.fromkeys(small, 1.0), **dict.fromkeys(big, 2.0)}

    fleet.evict(big)  # down to 50: one shard again
    n = len(log.log)
    cl.write(fleet.checkpoint(), [0])
    assert _kinds(log.log[n:]) == {"shard": 1, "tombstone": 8, "meta": 1}
    assert _restored(log) == dict.fromkeys(small, 1.0)
    fleet.evict(small)
    cl.write(fleet.checkpoint(), [0])
    assert _restored(log) == {}
    assert all(v is None for k, v, _ in log.log[-2:-1])


def test_a_vehicle_in_two_shards_after_a_crash_is_taken_from_the_later():
    """A crash between a re-shard's new records and the old keys' tombstones."""
    old = ck.encode_shard(_Fleet.rows(_with({"x": 1.0, "y": 1.0}), ["x", "y"]))
    new = ck.encode_shard(_Fleet.rows(_with({"x": 2.0}), ["x"]))
    vehicles, _ = ck.decode([(ck.shard_key(0, 1), old, 0), (ck.shard_key(1, 2), new, 0)])
    assert {v.vehicle_id: float(v.row[0]) for v in vehicles} == {"x": 2.0, "y": 1.0}


def _with(state: dict[str, float]) -> _Fleet:
    f = _Fleet()
    f.state = dict(state)
    return f


def test_a_changelog_of_a_record_per_vehicle_is_replaced_at_the_first_commit():
    fleet = _Fleet()
    ids = [f"veh-{i}" for i in range(300)]
    fleet.move(ids, 3.0)
    vs = fleet.rows(ids)
    b64 = lambda a: base64.b64encode(a.tobytes()).decode()  # noqa: E731
    log = _Log()
    log.log = [(v.encode(), orjson.dumps({"v": 1, "p": 0, "s": s, "row": b64(vs.rows[i]),
                                          "rec": b64(vs.rec[i]), "ep": None}), 0)
               for i, (v, s) in enumerate(zip(vs.ids, vs.slots, strict=True))]
    log.log.append((ids[0].encode(), None, 0))  # evicted before the upgrade
    cl = Changelog(log, "cl", bootstrap="-", client="-", partitions=1)
    vehicles, _ = cl.load(log.log, [0])
    assert len(vehicles) == 299
    fleet.evict(ids[:1])
    fleet.changed.clear()  # restored: nothing changed since
    fleet.gone.clear()
    n = len(log.log)
    cl.write(fleet.checkpoint(), [0])
    assert _kinds(log.log[n:]) == {"shard": 4, "tombstone": 299, "meta": 1}
    latest = {k: v for k, v, _ in log.log}
    assert all(v is None for k, v in latest.items() if not k.startswith(b"\xff"))
    assert _restored(log) == dict.fromkeys(ids[1:], 3.0)
