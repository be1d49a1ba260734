"""What the live map sends a browser: a fleet snapshot thinned to the viewer's viewport,
packed as one binary WebSocket message.

A frame is ``b"TSM1"``, a little-endian uint32 header length, the header (UTF-8 JSON,
space-padded to a multiple of 4 bytes), then float32 arrays of the ``n`` vehicles in the
header's ``ids`` order::

    x[n], y[n], heading[n], length[n], width[n], path[n * p * 2], sigma[n * p]

``x``/``y`` and the path points are metres relative to the header's ``origin`` (float32
keeps millimetres only near the origin, and local frames can be kilometres wide); ``sigma``
is the 1-sigma uncertainty of each path point in metres, NaN where the predictor gives none.
Packing costs a few numpy copies per frame; JSON for 5,000 vehicles with paths would cost
tens of milliseconds to write and to parse.

Thinning keeps the per-frame work proportional to what the viewer can see: vehicles whose
position or predicted path lies outside the viewport (plus a margin) are left out, and when
zoomed out paths keep only every k-th point (a 60 m path at 4 m per pixel is 15 pixels).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

__all__ = ["MAGIC", "FleetSnapshot", "View", "encode_frame", "path_step", "select"]

MAGIC = b"TSM1"
# Vehicles closer than this to the viewport's edge are sent too: their paths may reach in.
VIEW_MARGIN_M = 80.0
MAX_VIEW_SPAN_M = 1e7  # larger viewports are clamped (a hostile view must not overflow)


@dataclass(frozen=True)
class FleetSnapshot:
    """The vehicles at one moment: columnar, absolute metres, immutable once made.

    Row ``i`` of the arrays is vehicle ``ids[i]``; ``shown`` lists the rows to show (None:
    all). A processor's snapshot is a plain copy of its slot arrays (a memcpy, cheap on its
    thread) with ``shown`` marking the recent vehicles; picking the rows happens on the
    server's thread. ``paths`` is (n, p, 2) absolute x/y of the predicted points, NaN rows
    for a vehicle not predicted yet; ``sigma`` (n, p) or None.
    """

    ts: float  # event time the snapshot stands at
    ids: Sequence[str | None] | np.ndarray  # object array or list
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    length: np.ndarray
    width: np.ndarray
    paths: np.ndarray
    sigma: np.ndarray | None = None
    shown: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0] if self.shown is None else self.shown.size)

    def rows(self) -> np.ndarray:
        """Indices of the shown vehicles into the arrays."""
        return np.arange(self.x.shape[0]) if self.shown is None else self.shown

    @staticmethod
    def empty(points: int = 0, ts: float = math.nan) -> FleetSnapshot:
        f = np.empty(0, dtype=np.float64)
        return FleetSnapshot(ts=ts, ids=[], x=f, y=f.copy(), heading=f.copy(),
                             length=f.copy(), width=f.copy(), paths=np.empty((0, points, 2)),
                             sigma=None)


@dataclass(frozen=True)
class View:
    """The world rectangle a viewer shows and its scale (metres per screen pixel)."""

    x0: float
    y0: float
    x1: float
    y1: float
    m_per_px: float

    @staticmethod
    def parse(msg: dict[str, Any]) -> View:
        """From a viewer's ``{"type": "view", x0, y0, x1, y1, mpp}``; ValueError if invalid."""
        try:
            vals = [float(msg[k]) for k in ("x0", "y0", "x1", "y1", "mpp")]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError("view needs numbers x0, y0, x1, y1 and mpp") from exc
        x0, y0, x1, y1, mpp = vals
        if not all(math.isfinite(v) for v in vals):
            raise ValueError("view values must be finite")
        if not (x0 < x1 and y0 < y1 and mpp > 0):
            raise ValueError("view needs x0 < x1, y0 < y1 and mpp > 0")
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        hx = min((x1 - x0) / 2, MAX_VIEW_SPAN_M)
        hy = min((y1 - y0) / 2, MAX_VIEW_SPAN_M)
        return View(cx - hx, cy - hy, cx + hx, cy + hy, mpp)


def path_step(m_per_px: float, points: int) -> int:
    """Keep every k-th path point: all when zoomed in, fewer as a point spacing (~2-8 m at
    town speeds) shrinks below a few pixels."""
    if m_per_px < 0.3:
        k = 1
    elif m_per_px < 1.0:
        k = 2
    elif m_per_px < 4.0:
        k = 4
    else:
        k = 10
    return max(1, min(k, points))


def select(snap: FleetSnapshot, view: View | None, always: set[str] | frozenset[str] = frozenset(),
           limit: int = 20_000) -> np.ndarray:
    """Rows of ``snap`` a viewer of ``view`` needs (every shown one without a view), plus
    the vehicles in ``always`` (those of open alerts); at most ``limit``, nearest the centre
    first. Indices into the snapshot's arrays."""
    rows = snap.rows()
    if view is not None and rows.size:
        x0, y0 = view.x0 - VIEW_MARGIN_M, view.y0 - VIEW_MARGIN_M
        x1, y1 = view.x1 + VIEW_MARGIN_M, view.y1 + VIEW_MARGIN_M
        x, y = snap.x[rows], snap.y[rows]
        inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        if snap.paths.shape[1]:  # a fast vehicle outside may be heading in
            ex, ey = snap.paths[rows, -1, 0], snap.paths[rows, -1, 1]
            with np.errstate(invalid="ignore"):
                inside |= (ex >= x0) & (ex <= x1) & (ey >= y0) & (ey <= y1)
        if always:
            ids = snap.ids
            inside |= np.fromiter((ids[i] in always for i in rows.tolist()), dtype=bool,
                                  count=rows.size)
        rows = rows[inside]
    if rows.size > limit:
        cx = (view.x0 + view.x1) / 2 if view is not None else float(np.mean(snap.x))
        cy = (view.y0 + view.y1) / 2 if view is not None else float(np.mean(snap.y))
        d = (snap.x[rows] - cx) ** 2 + (snap.y[rows] - cy) ** 2
        rows = np.sort(rows[np.argpartition(d, limit - 1)[:limit]])
    return rows


def encode_frame(snap: FleetSnapshot, rows: np.ndarray, step: int, origin: tuple[float, float],
                 header: dict[str, Any]) -> bytes:
    """One binary frame with the vehicles at ``rows`` and every ``step``-th path point (the
    last point always kept). ``header`` gets ``n``, ``p``, ``origin`` and ``ids`` added."""
    p_all = snap.paths.shape[1]
    idx = np.arange(step - 1, p_all, step) if p_all else np.empty(0, dtype=np.intp)
    if p_all and (idx.size == 0 or idx[-1] != p_all - 1):
        idx = np.append(idx, p_all - 1)
    ox, oy = origin
    n, p = int(rows.size), int(idx.size)
    head = dict(header)
    ids = snap.ids
    head.update(n=n, p=p, origin=[ox, oy], ids=[ids[i] for i in rows.tolist()])
    hbytes = orjson.dumps(head)
    hbytes += b" " * (-(8 + len(hbytes)) % 4)
    body = np.empty(5 * n + 3 * n * p, dtype="<f4")
    body[0:n] = snap.x[rows] - ox
    body[n:2 * n] = snap.y[rows] - oy
    body[2 * n:3 * n] = snap.heading[rows]
    body[3 * n:4 * n] = snap.length[rows]
    body[4 * n:5 * n] = snap.width[rows]
    o = 5 * n
    if p:
        pts = snap.paths[rows][:, idx]
        path = body[o:o + 2 * n * p].reshape(n, p, 2)
        path[..., 0] = pts[..., 0] - ox
        path[..., 1] = pts[..., 1] - oy
        o += 2 * n * p
        body[o:o + n * p] = (snap.sigma[rows][:, idx].ravel() if snap.sigma is not None
                             else np.nan)
    return MAGIC + struct.pack("<I", len(hbytes)) + hbytes + body.tobytes()


def decode_frame(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The inverse of :func:`encode_frame` (tests, tools): header and absolute arrays."""
    if data[:4] != MAGIC:
        raise ValueError("not a trajstream map frame")
    (hlen,) = struct.unpack_from("<I", data, 4)
    head = orjson.loads(data[8:8 + hlen])
    body = np.frombuffer(data, dtype="<f4", offset=8 + hlen).astype(np.float64)
    n, p = head["n"], head["p"]
    ox, oy = head["origin"]
    o = 5 * n
    path = body[o:o + 2 * n * p].reshape(n, p, 2) + np.array([ox, oy])
    return head, {
        "x": body[0:n] + ox, "y": body[n:2 * n] + oy, "heading": body[2 * n:3 * n],
        "length": body[3 * n:4 * n], "width": body[4 * n:5 * n], "paths": path,
        "sigma": body[o + 2 * n * p:o + 3 * n * p].reshape(n, p),
    }
