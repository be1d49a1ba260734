"""Records of the internal topic between the predict and the risk stage (pure, no I/O).

Two kinds, both ``<4-byte big-endian header length><JSON header><raw arrays>``:

- **tick**: the predicted kinematics of some vehicles at tick ``k`` (event time ``t``), as
  :class:`~stream.conflicts.PredictedTick` arrays, bit-exact (float64 state and paths,
  float32 sigma), so the risk stage computes exactly what a single process computes. Header
  ``{"v", "kind": "tick", "k", "t", "model", "ids", "points", "tile"}``, ``tile`` being the
  publisher's ``[tile_m, halo_m]`` (absent in older records). One record per (risk
  partition, tick) per predict process. Version 2 added each track's start (``since``);
  version 1 records still decode, every track taken as long enough (a rolling upgrade).
- **progress**: input partition ``p`` of the positions topic has released every tick up to
  ``done``; ``inputs`` is the positions topic's partition count. Sent to every partition of
  the internal topic after the tick records it covers, so a risk process knows tick k is
  complete once each input partition reported ``done >= k`` (event time, not wall clock).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import orjson

from trajstream.stream.conflicts import PredictedTick
from trajstream.stream.risk import Fleet

__all__ = ["Progress", "TickRows", "decode", "encode_progress", "encode_tick"]

_VERSION = 2
_LEN = struct.Struct(">I")
_STATE = ("ts", "x", "y", "speed", "heading", "yaw_rate", "accel", "length", "width", "since")
_HEADING = _STATE.index("heading")
# state columns per record version: version 1 had no "since"
_COLUMNS = {1: _STATE[:-1], 2: _STATE}


@dataclass(frozen=True)
class TickRows:
    k: int
    model: str
    tick: PredictedTick
    tile: tuple[float, float] | None = None  # the publisher's (tile_m, halo_m)


@dataclass(frozen=True)
class Progress:
    partition: int
    done: int
    inputs: int


def _pack(header: dict, *arrays: np.ndarray) -> bytes:
    h = orjson.dumps(header)
    return b"".join([_LEN.pack(len(h)), h, *(np.ascontiguousarray(a).tobytes() for a in arrays)])


def encode_tick(k: int, model: str, tick: PredictedTick, rows: np.ndarray,
                tile: tuple[float, float]) -> bytes:
    """The ``rows`` of ``tick`` (tick number ``k``) as one record, fanned out by tiles of
    ``tile`` = (tile_m, halo_m)."""
    f = tick.fleet
    n = int(rows.shape[0])
    points = int(f.paths.shape[1])
    state = np.stack([np.full(n, np.nan) if getattr(f, c) is None else getattr(f, c)[rows]
                      for c in _STATE], axis=1).astype(np.float64)
    if f.heading_known is not None:  # a heading not observed yet travels as NaN
        state[:, _HEADING] = np.where(f.heading_known[rows], state[:, _HEADING], np.nan)
    sigma = (np.full((n, points), np.nan, np.float32) if tick.sigma is None
             else tick.sigma[rows].astype(np.float32))
    header = {"v": _VERSION, "kind": "tick", "k": int(k), "t": float(tick.t), "model": model,
              "ids": [str(v) for v in tick.ids[rows].tolist()], "points": points,
              "tile": [float(tile[0]), float(tile[1])]}
    return _pack(header, state, f.paths[rows].astype(np.float64), sigma)


def encode_progress(partition: int, done: int, inputs: int) -> bytes:
    return _pack({"v": _VERSION, "kind": "progress", "p": int(partition), "done": int(done),
                  "inputs": int(inputs)})


def decode(value: bytes) -> TickRows | Progress:
    """One record; raises ValueError on anything malformed."""
    if len(value) < _LEN.size:
        raise ValueError("record too short")
    (hlen,) = _LEN.unpack_from(value)
    body = _LEN.size + hlen
    try:
        header = orjson.loads(value[_LEN.size:body])
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"bad header: {exc}") from exc
    if not isinstance(header, dict) or header.get("v") not in _COLUMNS:
        raise ValueError("unknown record version")
    if header.get("kind") == "progress":
        return Progress(int(header["p"]), int(header["done"]), int(header["inputs"]))
    if header.get("kind") != "tick":
        raise ValueError(f"unknown record kind {header.get('kind')!r}")
    ids = header["ids"]
    columns = _COLUMNS[header["v"]]
    n, points, width = len(ids), int(header["points"]), len(columns)
    sizes = (n * width * 8, n * points * 2 * 8, n * points * 4)
    if len(value) != body + sum(sizes):
        raise ValueError("record size does not match its header")
    state = np.frombuffer(value, np.float64, n * width, body).reshape(n, width)
    at = body + sizes[0]
    paths = np.frombuffer(value, np.float64, n * points * 2, at).reshape(n, points, 2)
    sigma = np.frombuffer(value, np.float32, n * points, at + sizes[1]).reshape(n, points)
    cols = {c: state[:, i] for i, c in enumerate(columns)}
    known = np.isfinite(cols["heading"])
    cols["heading"] = np.where(known, cols["heading"], 0.0)
    fleet = Fleet(**cols, paths=paths, sigma=sigma, heading_known=known)
    tick = PredictedTick(float(header["t"]), np.array(ids, dtype=object), fleet, sigma)
    tile = header.get("tile")
    return TickRows(int(header["k"]), str(header["model"]), tick,
                    None if tile is None else (float(tile[0]), float(tile[1])))
