"""How well the NGSIM importer recovers heading and centre, and how fast it reads.

NGSIM gives the front bumper and no heading. The recorded NGSIM data set in CommonRoad's
form (centre, orientation; US-101 and Peachtree) is turned back into NGSIM rows (front
bumper, feet, milliseconds), imported, and compared record by record with the original:
the heading error (degrees; moving and standing vehicles apart) and the centre error (m) of
the importer's look-back heading, beside the textbook estimate (the direction of the last
frame-to-frame move) on the same rows. Vehicles that never move far enough for any estimate
are counted, not scored. CommonRoad's trajectories are smoother than raw NGSIM, so these
errors are a floor: the gap between the two estimates grows with position noise.

Run: .venv/bin/python bench/bench_import_ngsim.py [--data-dir DIR]
(DIR holds ngsim-us101.jsonl.gz and ngsim-peachtree.jsonl.gz; default
$TRAJSTREAM_DATA_DIR, else shared/data beside the repository's folder.)
"""

from __future__ import annotations

import gzip
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from _kit import parser

from trajstream.simulator.recorded.ngsim import (
    MIN_TRAVEL_M,
    ROAD_HEADING,
    motion_heading,
    read_ngsim,
)

FT = 0.3048
MOVING_MPS = 0.5
HEADER = ("Vehicle_ID,Frame_ID,Total_Frames,Global_Time,Local_X,Local_Y,Global_X,Global_Y,"
          "v_length,v_Width,v_Class,v_Vel,v_Acc,Lane_ID,Preceding,Following,Space_Headway,"
          "Time_Headway,Location")


def _load(path: Path) -> list[dict]:
    with gzip.open(path) as f:
        return [orjson.loads(line) for line in f]


def _to_ngsim_csv(records: list[dict], out: Path) -> None:
    """Front bumper in feet, time in ms; Location = scenario, so names map back."""
    with out.open("w") as f:
        f.write(HEADER + "\n")
        for r in records:
            scenario, vid = r["vehicle_id"].split("/")
            half = r["length"] / 2.0
            fx = (r["x"] + half * np.cos(r["heading"])) / FT
            fy = (r["y"] + half * np.sin(r["heading"])) / FT
            f.write(f"{vid},0,0,{round(r['ts'] * 1000)},{fx:.3f},{fy:.3f},0,0,"
                    f"{r['length'] / FT:.3f},{r['width'] / FT:.3f},2,{r['speed'] / FT:.3f},0,"
                    f"1,0,0,0,0,{scenario}\n")


def _last_step_heading(vid: np.ndarray, ts: np.ndarray, fx: np.ndarray,
                       fy: np.ndarray) -> np.ndarray:
    """Textbook: atan2 of the last frame-to-frame move; held while standing; a track's
    first fix takes its first move."""
    order = np.lexsort((ts, vid))
    v, x, y = vid[order], fx[order], fy[order]
    h = np.full(len(v), np.nan)
    same = v[1:] == v[:-1]
    dx, dy = x[1:] - x[:-1], y[1:] - y[:-1]
    moved = same & (np.hypot(dx, dy) > 1e-6)
    h[1:][moved] = np.arctan2(dy[moved], dx[moved])
    for i in range(1, len(v)):  # hold, within a track
        if np.isnan(h[i]) and v[i] == v[i - 1]:
            h[i] = h[i - 1]
    for i in range(len(v) - 2, -1, -1):  # a track's start takes its first move
        if np.isnan(h[i]) and v[i] == v[i + 1]:
            h[i] = h[i + 1]
    h[np.isnan(h)] = ROAD_HEADING
    out = np.empty_like(h)
    out[order] = h
    return out


def _angle_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.abs((a - b + np.pi) % (2 * np.pi) - np.pi))


def main() -> int:
    from trajstream.simulator.recorded.location import recorded_data_dir

    ap = parser(__doc__)
    ap.add_argument("--data-dir", type=Path, default=recorded_data_dir(),
                    help="folder holding ngsim-us101.jsonl.gz and ngsim-peachtree.jsonl.gz "
                    "($TRAJSTREAM_DATA_DIR, else shared/data beside the repository's "
                    "folder)")
    args = ap.parse_args()
    print("NGSIM import: heading and centre recovered from front-bumper rows, against "
          "CommonRoad's orientation")
    print(f"{'':<10} {'':>8} {'':>9}  {'':<10} {'heading error (deg)':^36}  "
          f"{'centre error (m)':^13}")
    print(f"{'':<10} {'':>8} {'':>9}  {'':<10} {'moving':^20}  {'standing':^13}  "
          f"{'estimated rows':^13}")
    print(f"{'source':<10} {'rows':>8} {'rows/s':>9}  {'estimate':<10} {'p50':>5} {'p95':>6} "
          f"{'>5deg':>7}  {'p50':>5} {'p95':>6}  {'p50':>6} {'p95':>6}")
    for name in ("us101", "peachtree"):
        path = args.data_dir / f"ngsim-{name}.jsonl.gz"
        if not path.is_file():
            print(f"{path} not found (set TRAJSTREAM_DATA_DIR or --data-dir)", file=sys.stderr)
            return 1
        records = _load(path)
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / f"{name}.csv"
            _to_ngsim_csv(records, csv)
            started = time.perf_counter()
            imported = read_ngsim([csv]).positions
            rate = len(records) / (time.perf_counter() - started)
        truth = {(r["vehicle_id"], round(r["ts"], 3)): r for r in records}
        ids, ts = imported.vehicle_id.tolist(), np.round(imported.ts, 3).tolist()
        ref = [truth[(v, t)] for v, t in zip(ids, ts, strict=True)]
        true_h = np.array([r["heading"] for r in ref])
        true_xy = np.array([(r["x"], r["y"]) for r in ref])
        half = imported.length / 2.0
        fx = imported.x + half * np.cos(imported.heading)
        fy = imported.y + half * np.sin(imported.heading)
        vid = imported.vehicle_id.astype(str)
        # rows of vehicles that never move MIN_TRAVEL_M have no estimate, only a guess
        track = np.unique(vid, return_inverse=True)[1]
        order = np.lexsort((imported.ts, track))
        guessed = np.empty(len(ref), dtype=bool)
        guessed[order] = motion_heading(track[order], fx[order], fy[order])[1]
        moving = np.array([r["speed"] for r in ref]) >= MOVING_MPS
        standing = ~moving & ~guessed
        textbook = _last_step_heading(vid, imported.ts, fx, fy)
        for label, h in (("look-back", imported.heading), ("last step", textbook)):
            err = _angle_error_deg(h, true_h)
            cx, cy = fx - half * np.cos(h), fy - half * np.sin(h)
            pos = np.hypot(cx - true_xy[:, 0], cy - true_xy[:, 1])[~guessed]
            first = label == "look-back"
            print(f"{name if first else '':<10} {len(ref) if first else '':>8} "
                  f"{f'{rate:,.0f}' if first else '':>9}  {label:<10} "
                  f"{np.percentile(err[moving], 50):>5.2f} "
                  f"{np.percentile(err[moving], 95):>6.2f} {np.mean(err[moving] > 5.0):>7.1%}  "
                  f"{np.percentile(err[standing], 50):>5.1f} "
                  f"{np.percentile(err[standing], 95):>6.1f}  "
                  f"{np.percentile(pos, 50):>6.3f} {np.percentile(pos, 95):>6.3f}")
        print(f"{'':<10} {'':>8} {'':>9}  {guessed.mean():.1%} of the rows are of vehicles "
              f"that never move {MIN_TRAVEL_M:g} m (no estimate)")
    print(f"moving: >= {MOVING_MPS} m/s; standing: slower, of a vehicle that moves "
          f"{MIN_TRAVEL_M:g} m at some point.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
