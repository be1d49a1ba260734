"""Position messages in the ``vehicle-positions`` contract: key = vehicle_id, value = JSON.

Floats are rounded (position to the centimetre, time to the millisecond, heading to 0.1 mrad)
so lines are compact and the same state always gives the same bytes.
"""

from __future__ import annotations

import numpy as np
import orjson

from simulator.config import DEFAULT_LENGTH_M, DEFAULT_WIDTH_M

Message = tuple[bytes, bytes]


def vehicle_name(vid: int) -> str:
    return f"veh-{vid}"


def _rounded(a: np.ndarray, decimals: int) -> list[float]:
    return (np.round(a, decimals) + 0.0).tolist()  # + 0.0 turns -0.0 into 0.0


def encode_positions(vid: np.ndarray, ts: np.ndarray, x: np.ndarray, y: np.ndarray,
                     speed: np.ndarray | None, heading: np.ndarray | None,
                     length: np.ndarray, width: np.ndarray) -> list[Message]:
    """One (key, value) per vehicle, in input order; ``speed``/``heading`` None omits them.
    ``length``/``width`` appear only when they differ from the 4.5 x 1.8 m default."""
    ids = [vehicle_name(i) for i in vid.tolist()]
    cols = [ids, _rounded(ts, 3), _rounded(x, 2), _rounded(y, 2)]
    if speed is None or heading is None:
        recs = [{"vehicle_id": i, "ts": t, "x": a, "y": b}
                for i, t, a, b in zip(*cols, strict=True)]
    else:
        cols += [_rounded(speed, 2), _rounded(heading, 4)]
        recs = [{"vehicle_id": i, "ts": t, "x": a, "y": b, "speed": sp, "heading": h}
                for i, t, a, b, sp, h in zip(*cols, strict=True)]
    odd = np.flatnonzero((length != DEFAULT_LENGTH_M) | (width != DEFAULT_WIDTH_M))
    if odd.shape[0]:
        for k, ln, wd in zip(odd.tolist(), _rounded(length[odd], 2), _rounded(width[odd], 2),
                             strict=True):
            recs[k]["length"] = ln
            recs[k]["width"] = wd
    dumps = orjson.dumps
    return [(i.encode(), dumps(r)) for i, r in zip(ids, recs, strict=True)]
