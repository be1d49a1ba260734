"""The state changelog on Kafka: write checkpoints, read them back on partition assignment.

Record layout and the recovery argument are in stream/checkpoint.py. The topic (default
``<group>-changelog``) is compacted and has the positions topic's partition count; a
vehicle's state goes to the partition number its positions come from, and every owned
partition gets its own meta record (key ``checkpoint.meta_key(p)``), so restoring input
partition p means reading changelog partition p from the beginning to its end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from typing import Any

from trajstream.errors import ConfigError, KafkaUnavailable
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


class Changelog:
    """Writes :class:`~stream.checkpoint.Checkpoint` s with ``producer`` and restores them."""

    def __init__(self, producer: Any, topic: str, *, bootstrap: str, client: str,
                 partitions: int, read_committed: bool = False,
                 client_config: Mapping[str, Any] | None = None) -> None:
        self.topic = topic
        self._client_config = dict(client_config or {})  # connection (security) settings
        self.partitions = partitions
        self._p = producer
        self._bootstrap = bootstrap
        self._client = client
        self._read_committed = read_committed

    def write(self, cp: ck.Checkpoint, owned: Collection[int]) -> int:
        """Queue the checkpoint's records (changed vehicles, tombstones, then one meta record
        per owned partition); the caller flushes (or commits the transaction)."""
        send, topic, n = self._p.send, self.topic, 0
        vs = cp.vehicles
        for vid, p, value in zip(vs.ids, vs.partitions, ck.encode_vehicles(vs), strict=True):
            if p >= 0:
                send(topic, value, vid.encode(), p)
                n += 1
        for vid, p in cp.tombstones:
            if p >= 0:
                send(topic, None, vid.encode(), p)
                n += 1
        for p in sorted(owned):
            send(topic, ck.encode_meta(cp.meta, p), ck.meta_key(p), p)
            n += 1
        return n

    def restore(self, partitions: Collection[int]
                ) -> tuple[list[ck.VehicleState], dict[int, dict[str, Any]]]:
        """The latest state of the vehicles and the meta of ``partitions``."""
        from trajstream.stream.kafka import read_to_end

        bad = [p for p in partitions if p >= self.partitions]
        if bad:
            raise ConfigError(
                f"input partition(s) {bad} have no changelog partition: {self.topic} has "
                f"{self.partitions}; the positions topic grew? Use a new --changelog-topic")
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
        vehicles, metas = ck.decode(recs)
        log.info("restored %d vehicle state(s) of partition(s) %s from %d changelog record(s) "
                 "in %.2f s", len(vehicles), sorted(partitions), len(recs),
                 time.monotonic() - t0)
        return vehicles, metas
