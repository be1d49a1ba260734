"""The batch-at-a-time record parser against kafka-python's own per-record parser."""

from __future__ import annotations

import random

import pytest
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from trajstream.stream.kafka._recordbatch import parse_records

CODECS = [DefaultRecordBatch.CODEC_NONE, DefaultRecordBatch.CODEC_GZIP,
          DefaultRecordBatch.CODEC_LZ4]


def _batch(records: list[tuple[int, int, bytes | None, bytes | None, list]], codec: int,
           *, log_append: bool = False) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 26)
    for offset, ts, key, value, headers in records:
        assert b.append(offset, ts, key, value, headers) is not None
    raw = bytearray(b.build())
    if log_append:  # the broker stamps the batch; records keep their create times
        DefaultRecordBatch.HEADER_STRUCT.pack_into(
            raw, 0, *_with_attr(DefaultRecordBatch(bytes(raw)), 0x08))
    return bytes(raw)


def _with_attr(batch: DefaultRecordBatch, bit: int) -> tuple:
    h = list(batch._header_data)
    h[5] |= bit
    return tuple(h)


def _reference(raw: bytes) -> list[tuple[int, int, bytes | None, bytes | None]]:
    return [(r.offset, r.timestamp, r.key, r.value) for r in DefaultRecordBatch(raw)]


def _fast(raw: bytes) -> list[tuple[int, int, bytes | None, bytes | None]]:
    batch = DefaultRecordBatch(raw)
    batch._maybe_uncompress()
    return parse_records(batch._buffer, batch._pos, batch.records_count, batch.base_offset,
                         batch.first_timestamp,
                         batch.max_timestamp if batch.timestamp_type == 1 else None)


@pytest.mark.parametrize("codec", CODECS)
def test_every_field_shape_parses_as_kafka_python_does(codec: int) -> None:
    rng = random.Random(codec)
    t0 = 1_764_547_200_000
    records = []
    offset = 0
    for i in range(700):
        offset += rng.choice([1, 1, 1, 2, 90, 20_000])  # compaction leaves gaps
        ts = t0 + rng.choice([0, 1, 63, 64, 8191, 8192, 10**7, -5, -10**6])
        key = rng.choice([None, b"", b"veh-%d" % i, bytes(range(256)) * 3])
        value = rng.choice([None, b"", b'{"vehicle_id":"veh-1","ts":1.5}',
                            bytes(rng.randrange(256) for _ in range(rng.choice([1, 63, 64,
                                                                                  9000])))])
        headers = rng.choice([[], [], [("trace", b"abc")], [("a", None), ("b", b"x" * 300)]])
        records.append((offset, ts, key, value, headers))
    raw = _batch(records, codec)
    assert _fast(raw) == _reference(raw)
    assert [r[0] for r in _fast(raw)] == [r[0] for r in records]


def test_log_append_time_gives_every_record_the_batch_time() -> None:
    raw = _batch([(0, 1000, b"k", b"v", []), (1, 2000, b"k", b"w", [])],
                 DefaultRecordBatch.CODEC_NONE, log_append=True)
    assert DefaultRecordBatch(raw).timestamp_type == 1
    assert [r[1] for r in _fast(raw)] == [2000, 2000]


def test_a_batch_that_does_not_add_up_is_refused() -> None:
    raw = _batch([(0, 1000, b"key", b"value", [])], DefaultRecordBatch.CODEC_NONE)
    batch = DefaultRecordBatch(raw)
    buf, pos = bytes(batch._buffer), batch._pos
    with pytest.raises(ValueError):  # a record past the end
        parse_records(buf[:-3], pos, 1, 0, 0)
    with pytest.raises(ValueError):  # bytes left over
        parse_records(buf + b"\x00", pos, 1, 0, 0)
    with pytest.raises((ValueError, IndexError)):  # more records announced than there are
        parse_records(buf, pos, 2, 0, 0)
