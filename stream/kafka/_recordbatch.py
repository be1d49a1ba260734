"""Kafka record batches (message format v2) parsed a batch at a time, for kafka-python.

kafka-python parses a fetch response record by record on the thread that calls ``poll``:
six varint function calls, a ``DefaultRecord`` and a 13-field ``ConsumerRecord`` per
message, about 4.7 us each, a third of a drain's processing time. :func:`parse_records`
reads one (decompressed) batch's records in a single loop with the common one-byte varints
inline and yields ``(offset, timestamp_ms, key, value)`` tuples; headers are skipped.

:func:`install` puts it into one consumer's fetcher. Everything around the records stays
kafka-python's own: fetch sessions, positions, CRC checks of each batch, decompression,
aborted transactions and control batches under ``read_committed``. Batches of the legacy
formats (v0/v1), consumers with deserializers and kafka-python versions whose fetcher does
not look as expected keep the library's per-record path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("trajstream.stream.kafka")

__all__ = ["FastRecord", "as_tuples", "install", "parse_records"]

FastRecord = tuple[int, int, "bytes | None", "bytes | None"]  # offset, timestamp, key, value


def as_tuples(records: list[Any], fast: bool) -> list[FastRecord]:
    """A polled partition's records as :data:`FastRecord` tuples: as they come from a
    consumer with :func:`install` in effect (``fast``), else from kafka-python's
    ConsumerRecords (the fallback path; one shape for the callers either way)."""
    if fast:
        return records
    return [(r.offset, r.timestamp, r.key, r.value) for r in records]


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """The unsigned varint (any length) at ``pos``: (its raw value, position after it)."""
    raw, shift = 0, 0
    while True:
        b = buf[pos]
        raw |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return raw, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint out of int64 range")


def parse_records(buf: bytes | bytearray, pos: int, count: int, base_offset: int,
                  first_ts: int, log_append_ts: int | None = None) -> list[FastRecord]:
    """The ``count`` records of a v2 batch whose (decompressed) records start at ``pos``.

    ``log_append_ts``: the batch's max timestamp when the topic stamps log-append time (then
    every record has it). Raises ValueError on a record that does not add up (a record's
    fields running past its length), as kafka-python raises CorruptRecordError.
    """
    if type(buf) is not bytes:
        buf = bytes(buf)  # slices of bytes are the keys and values, no second copy
    out: list[FastRecord] = []
    add = out.append
    end = len(buf)
    for _ in range(count):
        # Each varint: one or two bytes inline (all but the rarest), longer ones by call.
        b = buf[pos]
        if b < 0x80:
            u, pos = b, pos + 1
        elif buf[pos + 1] < 0x80:
            u, pos = (b & 0x7F) | (buf[pos + 1] << 7), pos + 2
        else:
            u, pos = _uvarint(buf, pos)
        length = (u >> 1) ^ -(u & 1)
        stop = pos + length
        if length < 0 or stop > end:
            raise ValueError(f"record length {length} at byte {pos} runs past the batch")
        p = pos + 1  # attributes: one byte, unused
        b = buf[p]
        if b < 0x80:
            u, p = b, p + 1
        elif buf[p + 1] < 0x80:
            u, p = (b & 0x7F) | (buf[p + 1] << 7), p + 2
        else:
            u, p = _uvarint(buf, p)
        ts = (u >> 1) ^ -(u & 1)
        b = buf[p]
        if b < 0x80:
            u, p = b, p + 1
        elif buf[p + 1] < 0x80:
            u, p = (b & 0x7F) | (buf[p + 1] << 7), p + 2
        else:
            u, p = _uvarint(buf, p)
        delta = (u >> 1) ^ -(u & 1)
        b = buf[p]
        if b < 0x80:
            u, p = b, p + 1
        elif buf[p + 1] < 0x80:
            u, p = (b & 0x7F) | (buf[p + 1] << 7), p + 2
        else:
            u, p = _uvarint(buf, p)
        n = (u >> 1) ^ -(u & 1)
        if n >= 0:
            key: bytes | None = buf[p:p + n]
            p += n
        else:
            key = None
        b = buf[p]
        if b < 0x80:
            u, p = b, p + 1
        elif buf[p + 1] < 0x80:
            u, p = (b & 0x7F) | (buf[p + 1] << 7), p + 2
        else:
            u, p = _uvarint(buf, p)
        n = (u >> 1) ^ -(u & 1)
        if n >= 0:
            value: bytes | None = buf[p:p + n]
            p += n
        else:
            value = None
        if p >= stop:  # at least the header count must remain
            raise ValueError(f"record at byte {pos} is longer than its length {length}")
        add((base_offset + delta, first_ts + ts if log_append_ts is None else log_append_ts,
             key, value))
        pos = stop
    if pos != end:
        raise ValueError(f"{end - pos} unconsumed bytes after the batch's {count} records")
    return out


def _fast_partition_records(base: type) -> type:
    """``base`` (kafka-python's ``Fetcher.PartitionRecords``) with batches parsed by
    :func:`parse_records`; the batch-level logic follows kafka-python's ``_unpack_records``.
    """
    from kafka import errors as kerr
    from kafka.consumer.fetcher import IsolationLevel

    class FastPartitionRecords(base):  # type: ignore[valid-type, misc]
        def _unpack_records(self, tp: Any, records: Any, key_deserializer: Any,
                            value_deserializer: Any) -> Iterator[Any]:
            if key_deserializer is not None or value_deserializer is not None:
                yield from super()._unpack_records(tp, records, key_deserializer,
                                                   value_deserializer)
                return
            batch = records.next_batch()
            last_batch = None
            while batch is not None:
                last_batch = batch
                if self.check_crcs and not batch.validate_crc():
                    raise kerr.CorruptRecordError(
                        f"Record batch for partition {self.topic_partition} at offset "
                        f"{batch.base_offset} failed crc check")
                if batch.magic != 2:  # legacy formats: kafka-python's records
                    yield from self._legacy(tp, batch)
                    batch = records.next_batch()
                    continue
                self.leader_epoch = batch.leader_epoch
                if (self.isolation_level == IsolationLevel.READ_COMMITTED
                        and batch.has_producer_id()):
                    self._consume_aborted_transactions_up_to(batch.last_offset)
                    producer_id = batch.producer_id
                    if self._contains_abort_marker(batch):
                        self.aborted_producer_ids.discard(producer_id)
                    elif self._is_batch_aborted(batch):
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue
                if batch.is_control_batch:
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
                batch._maybe_uncompress()
                try:
                    recs = parse_records(
                        batch._buffer, batch._pos, batch.records_count, batch.base_offset,
                        batch.first_timestamp,
                        batch.max_timestamp if batch.timestamp_type == 1 else None)
                except (ValueError, IndexError) as exc:
                    raise kerr.CorruptRecordError(
                        f"Found invalid record structure in partition {self.topic_partition} "
                        f"at offset {batch.base_offset}: {exc!r}") from exc
                self.records_read += len(recs)
                self.bytes_read += batch.size_in_bytes
                for rec in recs:
                    self.next_fetch_offset = rec[0] + 1
                    yield rec
                batch = records.next_batch()
            # v2 keeps a batch's last offset even when compaction removed its last record:
            # continue after the batch, not after its last surviving record
            if last_batch is not None and last_batch.magic == 2:
                self.next_fetch_offset = last_batch.next_offset
            self.drain()

        def _legacy(self, tp: Any, batch: Any) -> Iterator[FastRecord]:
            for record in batch:
                self.records_read += 1
                self.bytes_read += record.size_in_bytes
                self.next_fetch_offset = record.offset + 1
                yield record.offset, record.timestamp, record.key, record.value

        def _maybe_skip_record(self, record: Any) -> bool:
            return record[0] < self.fetch_offset  # type: ignore[no-any-return]

    return FastPartitionRecords


_FAST: dict[type, type] = {}
# What of kafka-python's internals the fast path relies on (present in 2.1 to 3.0).
_PARTITION_RECORDS_API = ("_unpack_records", "_consume_aborted_transactions_up_to",
                          "_is_batch_aborted", "_contains_abort_marker", "_maybe_skip_record",
                          "take", "drain")
_BATCH_API = ("_maybe_uncompress", "_buffer", "_pos", "records_count", "base_offset",
              "first_timestamp", "max_timestamp", "timestamp_type", "next_offset")


def install(consumer: Any) -> bool:
    """Parse ``consumer``'s fetched batches with :func:`parse_records`; its ``poll`` then
    returns :data:`FastRecord` tuples. False (and nothing changed) when this kafka-python's
    fetcher is not the one this module knows: its ConsumerRecords stay."""
    from kafka.record.default_records import DefaultRecordBatch

    fetcher: Any = getattr(consumer, "_fetcher", None)
    base = getattr(fetcher, "PartitionRecords", None)
    known = (base is not None
             and all(hasattr(base, n) for n in _PARTITION_RECORDS_API)
             and all(hasattr(DefaultRecordBatch, n) for n in _BATCH_API)
             and consumer.config.get("key_deserializer") is None
             and consumer.config.get("value_deserializer") is None)
    if base is None or not known:
        log.info("kafka-python's fetcher is not the expected one: records parsed one by one")
        return False
    if base not in _FAST:
        try:
            _FAST[base] = _fast_partition_records(base)
        except ImportError:  # a kafka-python without IsolationLevel: its own path
            log.info("kafka-python's fetcher is not the expected one: records parsed one by one")
            return False
    fetcher.PartitionRecords = _FAST[base]
    return True
