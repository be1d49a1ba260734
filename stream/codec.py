"""Batched decode and validation of position messages into columnar numpy arrays.

A batch in which every record has the common shape (a JSON object, vehicle_id, numeric
ts/x/y or lat/lon, optional fields numeric or absent, the key equal to the vehicle_id) is
taken in whole columns: one ``orjson.loads`` per record and a few passes that run in C
(``map``, type sets). Any other batch takes one pass of Python per record, which names every
rejection (its values parsed once either way, unless one is not JSON); unusual but valid
shapes (lat/lon beside x/y, a mix) take it too. Either way
everything numeric (finiteness, ranges, a heading within one turn, lat/lon projection,
defaults) is then checked on whole columns at once. Columns are built as Python lists and
converted once: numpy's per-element ``__setitem__`` costs about twice a list store, which is
most of the budget at several hundred thousand records per second.

Every rejected record gets one bounded ``reason`` (see :data:`REASONS`, used as a metric
label) and a human ``detail``; the dead-letter policy (stream/deadletter.py) acts on them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from itertools import repeat
from typing import Any

import numpy as np
import orjson

from trajstream.contracts import DEFAULT_LENGTH_M, DEFAULT_WIDTH_M

__all__ = [
    "REASONS",
    "CodecConfig",
    "PositionBatch",
    "Rejection",
    "decode_batch",
    "encode_json",
]

REASONS: tuple[str, ...] = (
    "oversized",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "not_finite",
    "out_of_range",
    "empty_key",
    "key_mismatch",
)

EARTH_RADIUS_M = 6_371_008.8  # mean radius; the equirectangular projection is local anyway
_TWO_PI = 2.0 * math.pi
_NAN = math.nan

# Bare NaN / Infinity where a JSON value would start: orjson refuses them as syntax errors.
_NON_FINITE_TOKEN = re.compile(rb"[:\[,]\s*[-+]?(?:NaN|nan|Infinity|inf)\b")


@dataclass(frozen=True, slots=True)
class CodecConfig:
    """Validation limits and the lat/lon origin.

    ``max_abs_coord_m`` bounds |x| and |y| of the local frame (a city is a few km; 1000 km is
    certainly a bug). ``origin_lat``/``origin_lon`` (degrees) enable lat/lon messages; without
    them such messages are rejected ``missing_field``. Length and width bounds cover a
    pedestrian-sized object up to a road train.
    """

    max_message_bytes: int = 4096
    max_abs_coord_m: float = 1e6
    max_speed_mps: float = 100.0
    origin_lat: float | None = None
    origin_lon: float | None = None
    min_ts: float = 946684800.0  # 2000-01-01
    max_ts: float = 4102444800.0  # 2100-01-01
    max_vehicle_id_chars: int = 128
    min_size_m: float = 0.1
    max_length_m: float = 60.0
    max_width_m: float = 6.0

    def __post_init__(self) -> None:
        from trajstream.errors import ConfigError

        if (self.origin_lat is None) != (self.origin_lon is None):
            raise ConfigError("origin_lat and origin_lon must be given together")
        if self.origin_lat is not None and not -90.0 < self.origin_lat < 90.0:
            raise ConfigError(f"origin_lat must be in (-90, 90), got {self.origin_lat}")
        if self.origin_lon is not None and not -180.0 <= self.origin_lon <= 180.0:
            raise ConfigError(f"origin_lon must be in [-180, 180], got {self.origin_lon}")
        if self.max_message_bytes <= 0:
            raise ConfigError(f"max_message_bytes must be > 0, got {self.max_message_bytes}")
        if not self.min_ts < self.max_ts:
            raise ConfigError(f"min_ts ({self.min_ts}) must be < max_ts ({self.max_ts})")

    @property
    def has_origin(self) -> bool:
        return self.origin_lat is not None


@dataclass(frozen=True, slots=True)
class PositionBatch:
    """Valid positions of one micro-batch, columnar, in input order.

    ``speed``/``heading`` are NaN when the message did not carry them; heading is in
    (-pi, pi]. ``index`` is each record's position in the input sequence, so callers can map
    back to offsets or raw bytes.
    """

    vehicle_id: np.ndarray  # object array of str
    ts: np.ndarray
    x: np.ndarray
    y: np.ndarray
    speed: np.ndarray
    heading: np.ndarray
    length: np.ndarray
    width: np.ndarray
    index: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, idx: np.ndarray | Sequence[int] | slice) -> PositionBatch:
        """The records at ``idx`` (indices, boolean mask or slice), as a new batch."""
        return PositionBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def empty() -> PositionBatch:
        f = np.empty(0, dtype=np.float64)
        return PositionBatch(
            vehicle_id=np.empty(0, dtype=object),
            ts=f,
            x=f.copy(),
            y=f.copy(),
            speed=f.copy(),
            heading=f.copy(),
            length=f.copy(),
            width=f.copy(),
            index=np.empty(0, dtype=np.int64),
        )


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why record ``index`` of the input was refused; ``reason`` is one of :data:`REASONS`."""

    index: int
    reason: str
    detail: str


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON; numpy scalars and arrays are accepted, NaN/inf become ``null``."""
    return orjson.dumps(obj, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):  # non-contiguous arrays orjson will not take natively
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _type_name(v: object) -> str:
    return "null" if v is None else type(v).__name__


def _short(v: object, limit: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


class _Reject(Exception):  # noqa: N818 - internal control flow of the slow path only
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def _number(d: dict, name: str, required: bool) -> float | None:
    v = d.get(name)
    t = type(v)
    if t is float or t is int:
        return v  # type: ignore[return-value]
    if v is None:
        if required:
            why = "is null" if name in d else "is missing"
            raise _Reject("missing_field", f"{name} {why}")
        return None
    raise _Reject("wrong_type", f"{name}: expected a number, got {_type_name(v)} {_short(v)}")


def _vehicle_id(d: dict, max_chars: int) -> str:
    vid = d.get("vehicle_id")
    if type(vid) is int:  # many fleets number their vehicles (NGSIM does): 42 is "42"
        vid = str(vid)
    if type(vid) is not str:
        if vid is None:
            why = "is null" if "vehicle_id" in d else "is missing"
            raise _Reject("missing_field", f"vehicle_id {why}")
        got = f"{_type_name(vid)} {_short(vid)}"
        raise _Reject("wrong_type", f"vehicle_id: expected a string or an integer, got {got}")
    if not vid:
        raise _Reject("missing_field", "vehicle_id is empty")
    if len(vid) > max_chars or not vid.isprintable() or "|" in vid:
        raise _Reject(
            "out_of_range",
            f"vehicle_id must be 1..{max_chars} printable characters without '|', "
            f"got {_short(vid)}",
        )
    return vid


_Fields = tuple[str, float, float, float, bool, Any, Any, Any, Any]


def _slow_fields(d: dict, cfg: CodecConfig) -> _Fields:
    """Full field extraction for any shape the fast path declined; raises ``_Reject``."""
    vid = _vehicle_id(d, cfg.max_vehicle_id_chars)
    ts = _number(d, "ts", True)
    geo = False
    if d.get("x") is None and d.get("y") is None and ("lat" in d or "lon" in d):
        if not cfg.has_origin:
            raise _Reject(
                "missing_field",
                "x/y missing; lat/lon needs an origin (configure --origin-lat/--origin-lon)",
            )
        a = _number(d, "lat", True)
        b = _number(d, "lon", True)
        geo = True
    else:
        a = _number(d, "x", True)
        b = _number(d, "y", True)
    speed = _number(d, "speed", False)
    heading = _number(d, "heading", False)
    length = _number(d, "length", False)
    width = _number(d, "width", False)
    return vid, ts, a, b, geo, speed, heading, length, width  # type: ignore[return-value]


def _not_json_reason(value: bytes, exc: Exception) -> tuple[str, str]:
    msg = str(exc)
    if "infinity" in msg or _NON_FINITE_TOKEN.search(value) is not None:
        return "not_finite", f"NaN or infinite number: {msg}"
    return "not_json", msg


_FIELD_NAMES = ("vehicle_id", "ts", "x", "y", "speed", "heading", "length", "width")
_NUMBER = frozenset((float, int))
_OPTIONAL = frozenset((float, int, type(None)))


def _parse_all(values: Sequence[bytes | None], cfg: CodecConfig) -> list[Any] | None:
    """Every value parsed, in one pass that runs in C; None when any is null (a tombstone),
    oversized or not JSON (:func:`_each_record` then names which)."""
    try:
        if max(map(len, values)) > cfg.max_message_bytes:  # type: ignore[arg-type]
            return None
        return list(map(orjson.loads, values))  # type: ignore[arg-type]
    except (TypeError, orjson.JSONDecodeError):
        return None


def _bulk_columns(
    keys: Sequence[bytes | None] | None, docs: list[Any], cfg: CodecConfig,
) -> tuple[list[list[Any]], bool] | None:
    """The columns of parsed records that all have the common shape (a JSON object with a
    valid vehicle_id, numeric ts and x/y, or lat/lon in every record, optional fields
    numeric or absent, the key equal to the vehicle_id), taken in a few passes that run in C
    (``map``), and whether they hold lat/lon; None when any record differs, and
    :func:`_each_record` then takes the batch one record at a time, naming each rejection.
    Accepts exactly what that loop accepts without a rejection."""
    if set(map(type, docs)) != {dict}:
        return None
    cols: list[list[Any]] = [list(map(dict.get, docs, repeat(name))) for name in _FIELD_NAMES]
    if cfg.has_origin and set(cols[2]) == {None} and set(cols[3]) == {None}:
        cols[2:4] = (list(map(dict.get, docs, repeat(f))) for f in ("lat", "lon"))
        geo = True
    else:
        geo = False
    vid = cols[0]
    id_types = set(map(type, vid))
    if id_types != {str}:
        if not id_types <= {str, int}:
            return None
        vid = cols[0] = [v if type(v) is str else str(v) for v in vid]
    for col in cols[1:4]:
        if not set(map(type, col)) <= _NUMBER:
            return None
    for col in cols[4:]:
        if not set(map(type, col)) <= _OPTIONAL:
            return None
    if min(map(len, vid)) == 0 or max(map(len, vid)) > cfg.max_vehicle_id_chars:
        return None
    joined = " ".join(vid)  # printable exactly when every id is
    if not joined.isprintable() or "|" in joined:
        return None
    if keys is not None and list(map(str.encode, vid)) != list(keys):
        return None
    return cols, geo


def _each_record(
    keys: Sequence[bytes | None] | None, values: Sequence[bytes | None], cfg: CodecConfig,
    rejections: list[Rejection], docs: list[Any] | None = None,
) -> tuple[list[list[Any]], list[int], list[int]]:
    """One record at a time: the columns of the valid records, their input indices and the
    rows holding lat/lon; a :class:`Rejection` per refused record. ``docs``: the values
    already parsed (:func:`_parse_all`), not parsed again."""
    n = len(values)
    reject = rejections.append
    max_bytes = cfg.max_message_bytes
    max_id = cfg.max_vehicle_id_chars
    has_origin = cfg.has_origin
    loads = orjson.loads
    JSONDecodeError = orjson.JSONDecodeError  # noqa: N806
    num = (float, int)
    opt = (float, int, type(None))

    c_id: list[Any] = [None] * n
    c_ts: list[Any] = [0.0] * n
    c_x: list[Any] = [0.0] * n
    c_y: list[Any] = [0.0] * n
    c_sp: list[Any] = [None] * n
    c_hd: list[Any] = [None] * n
    c_len: list[Any] = [None] * n
    c_wid: list[Any] = [None] * n
    c_idx: list[int] = [0] * n
    geo_rows: list[int] = []  # output rows whose x/y hold lat/lon until projected
    m = 0

    for i in range(n):
        if docs is not None:
            d = docs[i]
        else:
            v = values[i]
            if v is None:
                reject(Rejection(i, "not_json", "null value (tombstone)"))
                continue
            if len(v) > max_bytes:
                reject(Rejection(i, "oversized",
                                 f"{len(v)} bytes > max_message_bytes={max_bytes}"))
                continue
            try:
                d = loads(v)
            except JSONDecodeError as exc:
                reason, detail = _not_json_reason(bytes(v), exc)
                reject(Rejection(i, reason, detail))
                continue
        if type(d) is not dict:
            reject(Rejection(i, "not_object", f"JSON {_type_name(d)}, expected an object"))
            continue
        get = d.get
        vid = get("vehicle_id")
        ts = get("ts")
        x = get("x")
        y = get("y")
        sp = get("speed")
        hd = get("heading")
        ln = get("length")
        wd = get("width")
        geo = False
        if x is None and y is None and has_origin:
            x = get("lat")
            y = get("lon")
            geo = True
        if not (
            type(vid) is str
            and 0 < len(vid) <= max_id
            and type(ts) in num
            and type(x) in num
            and type(y) in num
            and type(sp) in opt
            and type(hd) in opt
            and type(ln) in opt
            and type(wd) in opt
            and vid.isprintable()
            and "|" not in vid
        ):
            try:
                vid, ts, x, y, geo, sp, hd, ln, wd = _slow_fields(d, cfg)
            except _Reject as r:
                reject(Rejection(i, r.reason, r.detail))
                continue
        if keys is not None:
            k = keys[i]
            if k is not None and k != vid.encode():
                if not k:
                    reject(Rejection(i, "empty_key", "empty message key"))
                else:
                    detail = f"key {_short(bytes(k))} != vehicle_id {vid!r}"
                    reject(Rejection(i, "key_mismatch", detail))
                continue
        c_id[m] = vid
        c_ts[m] = ts
        c_x[m] = x
        c_y[m] = y
        c_sp[m] = sp
        c_hd[m] = hd
        c_len[m] = ln
        c_wid[m] = wd
        c_idx[m] = i
        if geo:
            geo_rows.append(m)
        m += 1

    cols = [c_id, c_ts, c_x, c_y, c_sp, c_hd, c_len, c_wid]
    return [c[:m] for c in cols], c_idx[:m], geo_rows


def decode_batch(
    keys: Sequence[bytes | None] | None,
    values: Sequence[bytes | None],
    cfg: CodecConfig,
) -> tuple[PositionBatch, list[Rejection]]:
    """Decode and validate one micro-batch of position messages.

    ``keys[i]`` is the Kafka key of ``values[i]``: ``None`` (files, memory queue; ``keys``
    itself may be ``None``) means "use vehicle_id", an empty key is rejected ``empty_key`` and
    one that differs from vehicle_id ``key_mismatch``. Returns the valid records (input order
    kept, ``index`` into the input) and one :class:`Rejection` per refused record, sorted by
    index.
    """
    n = len(values)
    if keys is not None and len(keys) != n:
        raise ValueError(f"keys and values differ in length: {len(keys)} != {n}")
    rejections: list[Rejection] = []
    docs = _parse_all(values, cfg) if n else None
    bulk = _bulk_columns(keys, docs, cfg) if docs is not None else None
    if bulk is not None:
        (c_id, c_ts, c_x, c_y, c_sp, c_hd, c_len, c_wid), geo = bulk
        idx_arr = np.arange(n, dtype=np.int64)
        geo_rows = list(range(n)) if geo else []
    else:
        (c_id, c_ts, c_x, c_y, c_sp, c_hd, c_len, c_wid), c_idx, geo_rows = _each_record(
            keys, values, cfg, rejections, docs)
        idx_arr = np.array(c_idx, dtype=np.int64)
    m = idx_arr.shape[0]

    if m == 0:
        return PositionBatch.empty(), rejections
    f64 = np.float64
    # None -> NaN in the float conversion: absent optional fields come out as NaN.
    cols = {
        "ts": np.array(c_ts, dtype=f64),
        "x": np.array(c_x, dtype=f64),
        "y": np.array(c_y, dtype=f64),
        "speed": np.array(c_sp, dtype=f64),
        "heading": np.array(c_hd, dtype=f64),
        "length": np.array(c_len, dtype=f64),
        "width": np.array(c_wid, dtype=f64),
    }
    vid_arr = np.empty(m, dtype=object)
    vid_arr[:] = c_id

    bad = _check_columns(cols, geo_rows, idx_arr, cfg, rejections)
    batch = _finish(vid_arr, cols, idx_arr, geo_rows, cfg)
    if bad is not None:
        batch = batch.take(~bad)
        rejections.sort(key=lambda r: r.index)
    return batch, rejections


def _check_columns(
    cols: dict[str, np.ndarray],
    geo_rows: list[int],
    index: np.ndarray,
    cfg: CodecConfig,
    rejections: list[Rejection],
) -> np.ndarray | None:
    """Vectorised finiteness and range checks; appends rejections, returns the bad-row mask."""
    ts, x, y = cols["ts"], cols["x"], cols["y"]
    sp, hd, ln, wd = cols["speed"], cols["heading"], cols["length"], cols["width"]
    # NaN in optional columns means "absent", so only +-inf counts there.
    nonfinite = ~(np.isfinite(ts) & np.isfinite(x) & np.isfinite(y))
    for c in (sp, hd, ln, wd):
        nonfinite |= np.isinf(c)
    is_geo = np.zeros(len(ts), dtype=bool)
    if geo_rows:
        is_geo[geo_rows] = True
    lim = cfg.max_abs_coord_m
    with np.errstate(invalid="ignore"):
        bad_pos = np.where(
            is_geo,
            (np.abs(x) > 90.0) | (np.abs(y) > 180.0),
            (np.abs(x) > lim) | (np.abs(y) > lim),
        )
        if geo_rows:
            gx, gy = _project(x, y, cfg)
            bad_pos |= is_geo & ((np.abs(gx) > lim) | (np.abs(gy) > lim))
        out = (
            (ts < cfg.min_ts)
            | (ts > cfg.max_ts)
            | bad_pos
            | (sp < 0.0)
            | (sp > cfg.max_speed_mps)
            | (np.abs(hd) > _TWO_PI + 1e-9)  # radians: a larger value is a unit mistake
            | (ln < cfg.min_size_m)
            | (ln > cfg.max_length_m)
            | (wd < cfg.min_size_m)
            | (wd > cfg.max_width_m)
        )
    out &= ~nonfinite
    bad = nonfinite | out
    if not bad.any():
        return None
    required = ("ts", "x", "y", "lat", "lon")
    for row in np.flatnonzero(bad):
        pos = ("lat", "lon") if is_geo[row] else ("x", "y")
        values = {"ts": ts[row], pos[0]: x[row], pos[1]: y[row], "speed": sp[row]}
        values.update(heading=hd[row], length=ln[row], width=wd[row])
        values = {k: float(v) for k, v in values.items()}
        i = int(index[row])
        if nonfinite[row]:
            names = [
                k for k, v in values.items() if math.isinf(v) or (k in required and math.isnan(v))
            ]
            rejections.append(Rejection(i, "not_finite", "not finite: " + ", ".join(names)))
        else:
            rejections.append(Rejection(i, "out_of_range", _range_detail(values, cfg)))
    return bad


def _range_detail(v: dict[str, float], cfg: CodecConfig) -> str:
    lim = cfg.max_abs_coord_m
    msgs = []
    if not cfg.min_ts <= v["ts"] <= cfg.max_ts:
        unit = (" (milliseconds? ts is seconds since the epoch)"
                if cfg.min_ts <= v["ts"] / 1000.0 <= cfg.max_ts else "")
        msgs.append(f"ts={v['ts']!r} outside [{cfg.min_ts}, {cfg.max_ts}]{unit}")
    if "lat" in v:
        if abs(v["lat"]) > 90.0:
            msgs.append(f"lat={v['lat']!r} outside [-90, 90]")
        if abs(v["lon"]) > 180.0:
            msgs.append(f"lon={v['lon']!r} outside [-180, 180]")
        if abs(v["lat"]) <= 90.0 and abs(v["lon"]) <= 180.0:
            gx, gy = _project(np.array([v["lat"]]), np.array([v["lon"]]), cfg)
            if abs(gx[0]) > lim or abs(gy[0]) > lim:
                msgs.append(f"lat/lon projects farther than {lim} m from the origin")
    else:
        for k in ("x", "y"):
            if abs(v[k]) > lim:
                msgs.append(f"|{k}|={abs(v[k])!r} > max_abs_coord_m={lim}")
    if abs(v["heading"]) > _TWO_PI + 1e-9:
        msgs.append(f"heading={v['heading']!r} outside [-2pi, 2pi] (degrees? heading is "
                    f"radians)")
    if v["speed"] < 0.0 or v["speed"] > cfg.max_speed_mps:
        msgs.append(f"speed={v['speed']!r} outside [0, {cfg.max_speed_mps}]")
    # NaN (absent) fails the chained comparison, hence the isnan guards.
    if not cfg.min_size_m <= v["length"] <= cfg.max_length_m and not math.isnan(v["length"]):
        msgs.append(f"length={v['length']!r} outside [{cfg.min_size_m}, {cfg.max_length_m}]")
    if not cfg.min_size_m <= v["width"] <= cfg.max_width_m and not math.isnan(v["width"]):
        msgs.append(f"width={v['width']!r} outside [{cfg.min_size_m}, {cfg.max_width_m}]")
    return "; ".join(msgs)


def _project(lat: np.ndarray, lon: np.ndarray, cfg: CodecConfig) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular projection around the origin: x east, y north, metres.

    Good to well under a metre within tens of km of the origin, which is the scale of one
    processor's area; longitude differences are wrapped across the antimeridian.
    """
    lat0 = float(cfg.origin_lat)  # type: ignore[arg-type]
    lon0 = float(cfg.origin_lon)  # type: ignore[arg-type]
    dlon = (lon - lon0 + 180.0) % 360.0 - 180.0
    x = np.radians(dlon) * (EARTH_RADIUS_M * math.cos(math.radians(lat0)))
    y = np.radians(lat - lat0) * EARTH_RADIUS_M
    return x, y


def _finish(
    vid: np.ndarray,
    cols: dict[str, np.ndarray],
    index: np.ndarray,
    geo_rows: list[int],
    cfg: CodecConfig,
) -> PositionBatch:
    x, y = cols["x"], cols["y"]
    if geo_rows:
        rows = np.asarray(geo_rows, dtype=np.intp)
        gx, gy = _project(x[rows], y[rows], cfg)
        x[rows] = gx
        y[rows] = gy
    hd = cols["heading"]
    # Wrap into (-pi, pi]; NaN (absent) stays NaN.
    hd = math.pi - np.mod(math.pi - hd, _TWO_PI)
    hd[hd <= -math.pi] += _TWO_PI
    ln = cols["length"]
    wd = cols["width"]
    ln[np.isnan(ln)] = DEFAULT_LENGTH_M
    wd[np.isnan(wd)] = DEFAULT_WIDTH_M
    return PositionBatch(
        vehicle_id=vid,
        ts=cols["ts"],
        x=x,
        y=y,
        speed=cols["speed"],
        heading=hd,
        length=ln,
        width=wd,
        index=index,
    )
