"""stream.codec: every kind of bad input gets its reason; valid variants decode exactly."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from trajstream.errors import ConfigError
from trajstream.stream.codec import (
    DEFAULT_LENGTH_M,
    DEFAULT_WIDTH_M,
    REASONS,
    CodecConfig,
    PositionBatch,
    decode_batch,
    encode_json,
)

TS = 1764081000.25
CFG = CodecConfig()
GEO = CodecConfig(origin_lat=52.52, origin_lon=13.40)


def msg(**overrides: object) -> dict:
    m: dict = {
        "vehicle_id": "veh-1",
        "ts": TS,
        "x": 12.5,
        "y": -3.25,
        "speed": 13.9,
        "heading": 1.5,
    }
    for k, v in overrides.items():
        if v is _DROP:
            m.pop(k)
        else:
            m[k] = v
    return m


_DROP = object()


def one(value: bytes | dict | None, key: bytes | None = None, cfg: CodecConfig = CFG):
    raw = orjson.dumps(value) if isinstance(value, dict) else value
    return decode_batch([key], [raw], cfg)


def rejected(value: bytes | dict | None, key: bytes | None = None, cfg: CodecConfig = CFG):
    batch, rej = one(value, key, cfg)
    assert len(batch) == 0, "expected a rejection"
    assert len(rej) == 1 and rej[0].index == 0
    assert rej[0].reason in REASONS
    assert rej[0].detail
    return rej[0]


# ---------------------------------------------------------------- valid records


def test_typical_message_decodes_exactly() -> None:
    batch, rej = one(msg(), key=b"veh-1")
    assert rej == []
    assert len(batch) == 1
    assert batch.vehicle_id.dtype == object and batch.vehicle_id[0] == "veh-1"
    assert batch.ts[0] == TS and batch.x[0] == 12.5 and batch.y[0] == -3.25
    assert batch.speed[0] == 13.9 and batch.heading[0] == 1.5
    assert batch.length[0] == DEFAULT_LENGTH_M and batch.width[0] == DEFAULT_WIDTH_M
    assert batch.index.dtype == np.int64 and batch.index[0] == 0
    for col in ("ts", "x", "y", "speed", "heading", "length", "width"):
        assert getattr(batch, col).dtype == np.float64


def test_ints_are_numbers() -> None:
    batch, rej = one(msg(ts=1764081000, x=3, y=-4, speed=0, heading=0))
    assert rej == []
    assert batch.ts[0] == 1764081000.0 and batch.x[0] == 3.0 and batch.y[0] == -4.0
    assert batch.speed[0] == 0.0 and batch.heading[0] == 0.0


@pytest.mark.parametrize("how", ["absent", "null"])
def test_optional_speed_heading_absent_or_null_are_nan(how: str) -> None:
    v = _DROP if how == "absent" else None
    batch, rej = one(msg(speed=v, heading=v))
    assert rej == []
    assert math.isnan(batch.speed[0]) and math.isnan(batch.heading[0])
    assert batch.x[0] == 12.5


def test_length_width_given_and_defaulted() -> None:
    batch, rej = decode_batch(
        None,
        [
            orjson.dumps(msg(length=12.0, width=2.5)),
            orjson.dumps(msg(length=None)),
            orjson.dumps(msg(width=1.2)),
        ],
        CFG,
    )
    assert rej == []
    assert batch.length.tolist() == [12.0, DEFAULT_LENGTH_M, DEFAULT_LENGTH_M]
    assert batch.width.tolist() == [2.5, DEFAULT_WIDTH_M, 1.2]


def test_extra_fields_ignored() -> None:
    batch, rej = one(msg(extra={"nested": [1, 2]}, note="hi", flag=True))
    assert rej == [] and len(batch) == 1 and batch.x[0] == 12.5


def test_key_none_uses_vehicle_id_and_keys_may_be_omitted() -> None:
    b1, r1 = one(msg(), key=None)
    b2, r2 = decode_batch(None, [orjson.dumps(msg())], CFG)
    assert r1 == r2 == []
    assert b1.vehicle_id[0] == b2.vehicle_id[0] == "veh-1"


def test_unicode_vehicle_id_matches_utf8_key() -> None:
    batch, rej = one(msg(vehicle_id="Fahrzeug-ü-7"), key="Fahrzeug-ü-7".encode())
    assert rej == [] and batch.vehicle_id[0] == "Fahrzeug-ü-7"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (0.0, 0.0),
        (math.pi, math.pi),
        (-math.pi, math.pi),
        (3 * math.pi / 2, -math.pi / 2),
        (-3 * math.pi / 2, math.pi / 2),
        (6.0, 6.0 - 2 * math.pi),
        (-2 * math.pi, 0.0),
    ],
)
def test_heading_normalised_to_half_open_interval(given: float, expected: float) -> None:
    batch, rej = one(msg(heading=given))
    assert rej == []
    h = batch.heading[0]
    assert -math.pi < h <= math.pi
    assert h == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("given", [7.0, -100.0, 90.0, 1e300])
def test_heading_beyond_one_turn_is_rejected_not_wrapped(given: float) -> None:
    """Issue 12, finding 3: 100 or 1e300 used to be wrapped into some angle; a heading is
    radians, so anything past one turn is a unit mistake (degrees) or garbage."""
    _, rej = one(msg(heading=given))
    assert [r.reason for r in rej] == ["out_of_range"]
    assert "degrees? heading is radians" in rej[0].detail


def test_lat_lon_projected_around_origin() -> None:
    # 0.001 deg north of the origin is ~111.2 m; 0.001 deg east at 52.52 N is ~67.7 m.
    b, rej = decode_batch(
        None,
        [
            orjson.dumps(msg(x=_DROP, y=_DROP, lat=52.52, lon=13.40)),
            orjson.dumps(msg(x=_DROP, y=_DROP, lat=52.521, lon=13.40)),
            orjson.dumps(msg(x=_DROP, y=_DROP, lat=52.52, lon=13.401)),
            orjson.dumps(msg()),  # x/y records in the same batch stay untouched
        ],
        GEO,
    )
    assert rej == []
    assert b.x[0] == pytest.approx(0.0, abs=1e-9) and b.y[0] == pytest.approx(0.0, abs=1e-9)
    assert b.x[1] == pytest.approx(0.0, abs=1e-9) and b.y[1] == pytest.approx(111.195, abs=0.01)
    expected_east = 111.195 * math.cos(math.radians(52.52))
    assert b.x[2] == pytest.approx(expected_east, abs=0.01) and b.y[2] == pytest.approx(
        0.0, abs=1e-9
    )
    assert (b.x[3], b.y[3]) == (12.5, -3.25)


def test_lat_lon_wraps_across_antimeridian() -> None:
    cfg = CodecConfig(origin_lat=0.0, origin_lon=179.9995)
    b, rej = one(msg(x=_DROP, y=_DROP, lat=0.0, lon=-179.9995), cfg=cfg)
    assert rej == []
    assert b.x[0] == pytest.approx(111.195, abs=0.01)


def test_x_y_win_over_lat_lon() -> None:
    b, rej = one(msg(lat=10.0, lon=10.0), cfg=GEO)
    assert rej == [] and (b.x[0], b.y[0]) == (12.5, -3.25)


# ---------------------------------------------------------------- rejections


def test_oversized_checked_before_parsing() -> None:
    cfg = CodecConfig(max_message_bytes=64)
    r = rejected(b"{" + b" " * 100 + b"garbage", cfg=cfg)
    assert r.reason == "oversized"
    assert "64" in r.detail
    # exactly at the limit is fine
    raw = orjson.dumps(msg())
    b, rej = decode_batch(None, [raw], CodecConfig(max_message_bytes=len(raw)))
    assert rej == [] and len(b) == 1


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b'{"vehicle_id": "a", ', b"\xff\xfe", b'{"a": 1} trailing', b"{'a': 1}"],
)
def test_not_json(raw: bytes) -> None:
    assert rejected(raw).reason == "not_json"


def test_tombstone_value_rejected() -> None:
    assert rejected(None).reason == "not_json"


@pytest.mark.parametrize("raw", [b"[1, 2]", b"42", b'"veh-1"', b"null", b"true"])
def test_not_object(raw: bytes) -> None:
    assert rejected(raw).reason == "not_object"


@pytest.mark.parametrize("field", ["vehicle_id", "ts", "x", "y"])
@pytest.mark.parametrize("how", ["absent", "null"])
def test_missing_required_field(field: str, how: str) -> None:
    r = rejected(msg(**{field: _DROP if how == "absent" else None}))
    assert r.reason == "missing_field"
    assert field in r.detail


def test_empty_vehicle_id_is_missing() -> None:
    assert rejected(msg(vehicle_id="")).reason == "missing_field"


def test_lat_lon_without_origin_names_the_option() -> None:
    r = rejected(msg(x=_DROP, y=_DROP, lat=52.5, lon=13.4))
    assert r.reason == "missing_field"
    assert "--origin-lat" in r.detail


def test_half_lat_lon_is_missing_field() -> None:
    r = rejected(msg(x=_DROP, y=_DROP, lat=52.5), cfg=GEO)
    assert r.reason == "missing_field" and "lon" in r.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ts", "1764081000.1"),
        ("ts", True),
        ("x", False),
        ("y", [1.0]),
        ("x", {"v": 1}),
        ("speed", "fast"),
        ("speed", True),
        ("heading", "north"),
        ("length", "long"),
        ("width", False),
        ("vehicle_id", 4.2),
        ("vehicle_id", ["a"]),
        ("vehicle_id", True),
    ],
)
def test_wrong_type(field: str, value: object) -> None:
    r = rejected(msg(**{field: value}))
    assert r.reason == "wrong_type"
    assert field in r.detail


def test_an_integer_vehicle_id_is_its_decimal_string_in_both_decode_paths() -> None:
    """Many fleets number their vehicles (NGSIM does): 42 is vehicle "42", the same vehicle
    whether a record says 42 or "42", and its Kafka key b"42" matches it."""
    ids: list[object] = [42, "42", -7, 123456789012]
    values = [orjson.dumps(msg(vehicle_id=v, ts=TS + i)) for i, v in enumerate(ids)]
    keys = [str(v).encode() for v in ids]
    whole, rej = decode_batch(keys, values, CFG)
    assert rej == []
    assert whole.vehicle_id.tolist() == ["42", "42", "-7", "123456789012"]
    one_by_one, rej = decode_batch([*keys, None], [*values, b"[]"], CFG)
    assert [r.reason for r in rej] == ["not_object"]
    assert one_by_one.vehicle_id.tolist() == whole.vehicle_id.tolist()
    assert rejected(msg(vehicle_id=42), key=b"43").reason == "key_mismatch"


def test_wrong_type_lat_lon() -> None:
    r = rejected(msg(x=_DROP, y=_DROP, lat="52.5", lon=13.4), cfg=GEO)
    assert r.reason == "wrong_type" and "lat" in r.detail


@pytest.mark.parametrize(
    "raw",
    [
        b'{"vehicle_id": "a", "ts": 1764081000.1, "x": NaN, "y": 1}',
        b'{"vehicle_id": "a", "ts": 1764081000.1, "x": 1, "y": -Infinity}',
        b'{"vehicle_id": "a", "ts": 1764081000.1, "x": 1, "y": 1, "speed": Infinity}',
        b'{"vehicle_id": "a", "ts": 1764081000.1, "x": 1e999, "y": 1}',
        b'{"vehicle_id": "a", "ts": 1764081000.1, "x": 1, "y": 1, "heading": -1e400}',
        b'{"vehicle_id": "a", "ts": 1764081000.1, "x": 1, "y": 1, "speed":NaN}',
    ],
)
def test_not_finite(raw: bytes) -> None:
    assert rejected(raw).reason == "not_finite"


def test_nan_inside_a_string_is_fine() -> None:
    b, rej = one(msg(vehicle_id="NaN", note="Infinity"))
    assert rej == [] and b.vehicle_id[0] == "NaN"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"x": 2e6}, "x"),
        ({"y": -1e7}, "y"),
        ({"ts": 1.0}, "ts"),
        ({"ts": 5e9}, "ts"),
        ({"ts": 1764081000123}, "ts"),  # milliseconds instead of seconds
        ({"speed": -1.0}, "speed"),
        ({"speed": 250.0}, "speed"),
        ({"length": 0.0}, "length"),
        ({"length": 500}, "length"),
        ({"width": -1}, "width"),
        ({"width": 40.0}, "width"),
        ({"vehicle_id": "v" * 129}, "vehicle_id"),
        ({"vehicle_id": "a|b"}, "vehicle_id"),
        ({"vehicle_id": "line\nbreak"}, "vehicle_id"),
    ],
)
def test_out_of_range(overrides: dict, needle: str) -> None:
    r = rejected(msg(**overrides))
    assert r.reason == "out_of_range"
    assert needle in r.detail


def test_limits_are_configurable() -> None:
    m = msg(x=5000.0, speed=60.0)
    assert len(one(m)[0]) == 1
    assert rejected(m, cfg=CodecConfig(max_abs_coord_m=1000.0)).reason == "out_of_range"
    assert rejected(m, cfg=CodecConfig(max_speed_mps=50.0)).reason == "out_of_range"


@pytest.mark.parametrize(
    ("lat", "lon"), [(91.0, 13.4), (-90.5, 13.4), (52.5, 181.0), (52.5, -200.0)]
)
def test_out_of_range_lat_lon(lat: float, lon: float) -> None:
    assert rejected(msg(x=_DROP, y=_DROP, lat=lat, lon=lon), cfg=GEO).reason == "out_of_range"


def test_lat_lon_too_far_from_origin() -> None:
    cfg = CodecConfig(origin_lat=52.52, origin_lon=13.40, max_abs_coord_m=10_000.0)
    r = rejected(msg(x=_DROP, y=_DROP, lat=48.0, lon=11.0), cfg=cfg)
    assert r.reason == "out_of_range" and "origin" in r.detail


def test_lat_lon_near_origin_with_a_bad_heading_blames_the_heading_only() -> None:
    # A compass bearing in degrees sent as heading: the position is fine, and the detail
    # said it "projects farther than ... from the origin", sending integrators after
    # their coordinates.
    r = rejected(msg(x=_DROP, y=_DROP, lat=52.521, lon=13.401, heading=130.7), cfg=GEO)
    assert r.reason == "out_of_range"
    assert "heading" in r.detail and "origin" not in r.detail
    r = rejected(msg(x=_DROP, y=_DROP, lat=52.521, lon=13.401, speed=250.0), cfg=GEO)
    assert "speed" in r.detail and "origin" not in r.detail


def test_empty_key() -> None:
    assert rejected(msg(), key=b"").reason == "empty_key"


def test_key_mismatch() -> None:
    r = rejected(msg(), key=b"veh-2")
    assert r.reason == "key_mismatch"
    assert "veh-2" in r.detail and "veh-1" in r.detail


def test_non_utf8_key_mismatches() -> None:
    assert rejected(msg(), key=b"\xffveh-1").reason == "key_mismatch"


def test_every_reason_is_reachable() -> None:
    """Guards REASONS against drifting from what decode_batch actually reports."""
    cfg = CodecConfig(max_message_bytes=200)
    cases = [
        (None, b"x" * 300),
        (None, b"nope"),
        (None, b"[]"),
        (None, orjson.dumps(msg(ts=_DROP))),
        (None, orjson.dumps(msg(x="1"))),
        (None, b'{"vehicle_id": "a", "ts": 1764081000.1, "x": NaN, "y": 1}'),
        (None, orjson.dumps(msg(x=1e9))),
        (b"", orjson.dumps(msg())),
        (b"other", orjson.dumps(msg())),
    ]
    _, rej = decode_batch([k for k, _ in cases], [v for _, v in cases], cfg)
    assert sorted(r.reason for r in rej) == sorted(REASONS)


# ---------------------------------------------------------------- batches


def test_mixed_batch_keeps_order_and_index() -> None:
    values = []
    keys: list[bytes | None] = []
    expect_ok = []
    expect_bad = {}
    for i in range(40):
        vid = f"veh-{i}"
        if i % 5 == 1:
            values.append(b"garbage")
            expect_bad[i] = "not_json"
        elif i % 5 == 3:
            values.append(orjson.dumps(msg(vehicle_id=vid, x=1e9)))
            expect_bad[i] = "out_of_range"
        elif i % 7 == 0:
            values.append(orjson.dumps(msg(vehicle_id=vid, speed="x")))
            expect_bad[i] = "wrong_type"
        else:
            values.append(orjson.dumps(msg(vehicle_id=vid, x=float(i), ts=TS + i)))
            expect_ok.append(i)
        keys.append(vid.encode() if i % 2 else None)
    batch, rej = decode_batch(keys, values, CFG)
    assert batch.index.tolist() == expect_ok
    assert batch.vehicle_id.tolist() == [f"veh-{i}" for i in expect_ok]
    assert batch.x.tolist() == [float(i) for i in expect_ok]
    assert batch.ts.tolist() == [TS + i for i in expect_ok]
    assert [r.index for r in rej] == sorted(expect_bad)
    assert {r.index: r.reason for r in rej} == expect_bad


@pytest.mark.parametrize("cfg", [CFG, GEO], ids=["xy", "origin"])
def test_whole_batch_and_record_by_record_decode_alike(cfg: CodecConfig) -> None:
    """A batch of valid records is decoded in whole columns; one bad record sends the batch
    through the per-record loop. Both give the same valid rows, to the bit."""
    rng = np.random.default_rng(3)
    variants = [
        {}, {"ts": int(TS) + 1}, {"x": 7}, {"speed": None}, {"heading": _DROP},
        {"speed": _DROP, "heading": _DROP}, {"length": 12.0, "width": 2.5},
        {"lat": 52.5, "lon": 13.4}, {"heading": -3.0}, {"vehicle_id": "fahrzeug-ä"},
        {"vehicle_id": 42},
    ]
    values, keys = [], []
    for i in range(200):
        m = msg(**{"vehicle_id": f"veh-{i % 37}", "ts": TS + i * 0.01,
                   "x": float(rng.normal(0, 500)), **variants[i % len(variants)]})
        values.append(orjson.dumps(m))
        keys.append(str(m["vehicle_id"]).encode())
    whole, rej = decode_batch(keys, values, cfg)
    assert rej == []
    # not JSON: parsed again one by one; valid JSON of the wrong shape: parsed once
    for bad, reason in ((b"not json", "not_json"), (b'{"vehicle_id": 5.5}', "wrong_type")):
        one_by_one, rej2 = decode_batch([*keys, None], [*values, bad], cfg)
        assert [r.reason for r in rej2] == [reason]
        for name in ("vehicle_id", "ts", "x", "y", "speed", "heading", "length", "width",
                     "index"):
            np.testing.assert_array_equal(getattr(whole, name), getattr(one_by_one, name),
                                          name)
    if cfg is GEO:  # every record with lat/lon only: projected in the whole-column pass too
        geo = [orjson.dumps({"vehicle_id": "g", "ts": TS + k, "lat": 52.52 + k * 1e-4,
                             "lon": 13.4}) for k in range(5)]
        a, _ = decode_batch(None, geo, cfg)
        b, _ = decode_batch(None, [*geo, b"[]"], cfg)
        assert a.x.tolist() == b.x.tolist() and a.y.tolist() == b.y.tolist()
        assert a.y.max() > 40.0


def test_empty_input() -> None:
    batch, rej = decode_batch([], [], CFG)
    assert len(batch) == 0 and rej == []
    assert batch.vehicle_id.dtype == object and batch.index.dtype == np.int64


def test_all_rejected_gives_empty_batch() -> None:
    batch, rej = decode_batch(None, [b"x", b"[]"], CFG)
    assert len(batch) == 0 and [r.reason for r in rej] == ["not_json", "not_object"]


def test_keys_values_length_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        decode_batch([None], [b"{}", b"{}"], CFG)


def test_take_and_empty() -> None:
    vals = [orjson.dumps(msg(vehicle_id=f"v{i}", x=float(i))) for i in range(5)]
    batch, _ = decode_batch(None, vals, CFG)
    sub = batch.take(np.array([4, 1]))
    assert isinstance(sub, PositionBatch)
    assert sub.vehicle_id.tolist() == ["v4", "v1"] and sub.x.tolist() == [4.0, 1.0]
    assert sub.index.tolist() == [4, 1]
    masked = batch.take(batch.x > 2)
    assert masked.index.tolist() == [3, 4]
    e = PositionBatch.empty()
    assert len(e) == 0 and len(e.take(np.array([], dtype=np.int64))) == 0


def test_accepts_bytearray_and_memoryview() -> None:
    raw = orjson.dumps(msg())
    batch, rej = decode_batch([bytearray(b"veh-1"), None], [bytearray(raw), memoryview(raw)], CFG)
    assert rej == [] and len(batch) == 2


# ---------------------------------------------------------------- config and encode


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        CodecConfig(origin_lat=52.0)
    with pytest.raises(ConfigError):
        CodecConfig(origin_lat=95.0, origin_lon=0.0)
    with pytest.raises(ConfigError):
        CodecConfig(max_message_bytes=0)
    with pytest.raises(ConfigError):
        CodecConfig(min_ts=10.0, max_ts=5.0)


def test_encode_json_roundtrip_with_numpy() -> None:
    arr = np.arange(6, dtype=np.float64).reshape(3, 2)
    obj = {
        "a": np.float64(1.5),
        "b": np.int64(3),
        "c": arr,
        "d": arr[:, 0],  # non-contiguous view
        "e": float("nan"),
        "s": "ü",
    }
    out = encode_json(obj)
    assert isinstance(out, bytes)
    back = orjson.loads(out)
    assert back == {
        "a": 1.5,
        "b": 3,
        "c": [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]],
        "d": [0.0, 2.0, 4.0],
        "e": None,
        "s": "ü",
    }


def test_encode_then_decode() -> None:
    value = encode_json(msg(speed=np.float32(2.5)))
    batch, rej = decode_batch([b"veh-1"], [value], CFG)
    assert rej == [] and batch.speed[0] == 2.5


def test_no_position_at_all_with_origin_configured() -> None:
    r = rejected(msg(x=_DROP, y=_DROP), cfg=GEO)
    assert r.reason == "missing_field" and "x" in r.detail
