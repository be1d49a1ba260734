"""NGSIM vehicle trajectories (US-101, I-80, Lankershim, Peachtree) in their CSV/text forms.

Each row is one vehicle at one 100 ms frame: ``Vehicle_ID``, ``Global_Time`` (ms since the
epoch), ``Local_X``/``Local_Y`` (the front centre of the vehicle; Local_Y along the road,
Local_X across it, to the right of the direction of travel, so the two form a right-handed
x/y frame), ``v_Length``/``v_Width`` and ``v_Vel``, all in feet (some re-exports are metric).
Read as they come: the original whitespace-separated files without a header (the first
twelve columns are the same in every location's layout), headed CSVs whatever the case of
the column names (``v_length`` / ``v_Length``), with or without ``Location``, a byte-order
mark, a leading index column, padded fields, blank lines and duplicate rows.

The output is the vehicle's centre with a heading, which NGSIM does not have: it is the
direction of the front point's motion over the last ``MIN_TRAVEL_M`` metres. It looks back
only (a heading taken from later positions would leak the future into anything evaluated on
these files), holds still while the vehicle stands, and before a vehicle has moved that far
takes the direction of its first such move. A vehicle that never moves that far is taken to
face along the road (+Local_Y).

Vehicles are named ``<Location>/<Vehicle_ID>`` (the file name stands in when there is no
Location column). NGSIM reuses vehicle ids from one 15-minute period to the next, so a
vehicle's rows that resume after more than ``MAX_GAP_S`` make a new track, ``<name>#2``.
"""

from __future__ import annotations

import csv
import io
import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Literal

import numpy as np

from trajstream.inputs import READ_ERRORS, open_input
from trajstream.simulator.recorded.records import ImportFailed, Positions

Units = Literal["feet", "metres"]
UNIT_M: dict[str, float] = {"feet": 0.3048, "metres": 1.0}

MIN_TRAVEL_M = 2.0  # heading baseline: ~2 frames at highway speed, noise ~0.1 m -> ~3 degrees
MAX_LOOKBACK_ROWS = 50  # 5 s at 10 Hz: slower than 0.4 m/s, the last heading is held
MAX_GAP_S = 1.0
ROAD_HEADING = math.pi / 2  # +Local_Y

# What the columns are called (compared in lower case) and where they sit in the original
# header-less files.
_COLUMNS: dict[str, tuple[tuple[str, ...], int]] = {
    "Vehicle_ID": (("vehicle_id",), 0),
    "Global_Time": (("global_time",), 3),
    "Local_X": (("local_x",), 4),
    "Local_Y": (("local_y",), 5),
    "v_Length": (("v_length", "vehicle_length"), 8),
    "v_Width": (("v_width", "vehicle_width"), 9),
    "v_Vel": (("v_vel", "vehicle_velocity"), 11),
}
_NUMERIC = ("Global_Time", "Local_X", "Local_Y", "v_Length", "v_Width", "v_Vel")
_CHUNK_ROWS = 200_000

# A file whose median vehicle, after conversion, is outside these sizes is in other units
# than the flag says (a car is ~15 ft = 4.6 m long and ~6 ft = 1.8 m wide).
_PLAUSIBLE_LENGTH_M = (2.5, 10.0)
_PLAUSIBLE_WIDTH_M = (1.2, 3.0)


@dataclass(frozen=True)
class NgsimImport:
    positions: Positions
    rows: int
    duplicates: int  # rows of a vehicle and time already seen (the first one is kept)
    standing: int  # vehicles that never moved MIN_TRAVEL_M: heading assumed along the road


def read_ngsim(paths: Sequence[Path], *, units: Units = "feet",
               progress: Callable[[int], None] | None = None) -> NgsimImport:
    """Every row of every file as positions of vehicle centres, in metres and seconds."""
    if units not in UNIT_M:
        raise ImportFailed(f"units must be one of {', '.join(UNIT_M)}, got {units!r}")
    names: dict[tuple[str, str], int] = {}
    chunks: list[dict[str, np.ndarray]] = []
    for path in paths:
        chunks.extend(_read_file(path, names, progress))
    if not chunks:
        raise ImportFailed(f"{paths[0] if len(paths) == 1 else 'the files'}: no data rows")
    cols = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    del chunks
    scale = UNIT_M[units]
    for k in ("Local_X", "Local_Y", "v_Length", "v_Width", "v_Vel"):
        cols[k] = cols[k] * scale
    _check_units(cols, units, paths)

    # one vehicle's rows in time order (stable: of duplicates the first in the file stays)
    t_ms = np.rint(cols["Global_Time"]).astype(np.int64)
    key = cols["key"]
    order = np.lexsort((t_ms, key))
    key, t_ms = key[order], t_ms[order]
    dup = np.zeros(order.shape[0], dtype=bool)
    dup[1:] = (key[1:] == key[:-1]) & (t_ms[1:] == t_ms[:-1])
    order, key, t_ms = order[~dup], key[~dup], t_ms[~dup]
    starts = np.ones(order.shape[0], dtype=bool)
    starts[1:] = (key[1:] != key[:-1]) | (t_ms[1:] - t_ms[:-1] > MAX_GAP_S * 1000)
    track = np.cumsum(starts) - 1

    fx, fy = cols["Local_X"][order], cols["Local_Y"][order]
    length, width = cols["v_Length"][order], cols["v_Width"][order]
    heading, guessed = motion_heading(track, fx, fy)
    half = length / 2.0
    names_by_key = {k: f"{loc}/{vid}" for (loc, vid), k in names.items()}
    track_names = _track_names(key[starts], names_by_key)
    positions = Positions(
        vehicle_id=np.array(track_names, dtype=object)[track],
        ts=t_ms / 1000.0,
        x=fx - half * np.cos(heading),
        y=fy - half * np.sin(heading),
        speed=cols["v_Vel"][order],
        heading=heading,
        length=length,
        width=width,
    )
    return NgsimImport(positions, rows=int(dup.shape[0]), duplicates=int(dup.sum()),
                       standing=int(np.unique(track[guessed]).shape[0]))


def motion_heading(track: np.ndarray, x: np.ndarray,
                   y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Direction of travel at each row (rows grouped by track, in time order): from the
    latest earlier fix at least MIN_TRAVEL_M away within MAX_LOOKBACK_ROWS, else the last
    such heading, else the track's first one, else along the road; and which rows got that
    last guess."""
    n = track.shape[0]
    heading = np.full(n, np.nan)
    for lag in range(1, min(MAX_LOOKBACK_ROWS, n - 1) + 1):
        dx, dy = x[lag:] - x[:-lag], y[lag:] - y[:-lag]
        new = ((track[lag:] == track[:-lag]) & (dx * dx + dy * dy >= MIN_TRAVEL_M ** 2)
               & np.isnan(heading[lag:]))
        heading[lag:][new] = np.arctan2(dy[new], dx[new])
    rows = np.arange(n)
    known = ~np.isnan(heading)
    # hold the last known heading within the track...
    last = np.maximum.accumulate(np.where(known, rows, -1))
    hold = ~known & (last >= 0)
    hold[hold] = track[last[hold]] == track[hold]
    heading[hold] = heading[last[hold]]
    # ...before the first one, take it from the first move...
    known = ~np.isnan(heading)
    nxt = np.minimum.accumulate(np.where(known, rows, n)[::-1])[::-1]
    early = ~known & (nxt < n)
    early[early] = track[nxt[early]] == track[early]
    heading[early] = heading[nxt[early]]
    # ...and a vehicle that never moved faces along the road
    guessed = np.isnan(heading)
    heading[guessed] = ROAD_HEADING
    return heading, guessed


def _track_names(first_keys: np.ndarray, names_by_key: dict[int, str]) -> list[str]:
    """A name per track: the vehicle's name, then ``#2``, ``#3``... for its later tracks."""
    seen: dict[int, int] = {}
    out = []
    for k in first_keys.tolist():
        seen[k] = seen.get(k, 0) + 1
        out.append(names_by_key[k] + (f"#{seen[k]}" if seen[k] > 1 else ""))
    return out


def _check_units(cols: dict[str, np.ndarray], units: str, paths: Sequence[Path]) -> None:
    _, first = np.unique(cols["key"], return_index=True)
    length = float(np.median(cols["v_Length"][first]))
    width = float(np.median(cols["v_Width"][first]))
    lo_l, hi_l = _PLAUSIBLE_LENGTH_M
    lo_w, hi_w = _PLAUSIBLE_WIDTH_M
    if lo_l <= length <= hi_l and lo_w <= width <= hi_w:
        return
    other = "metres" if units == "feet" else "feet"
    where = paths[0] if len(paths) == 1 else "these files"
    raise ImportFailed(
        f"{where}: read as {units}, the median vehicle is {length:.2f} m long and "
        f"{width:.2f} m wide, not a car; are the files in {other} (--units {other})?")


def _read_file(path: Path, names: dict[tuple[str, str], int],
               progress: Callable[[int], None] | None) -> Iterator[dict[str, np.ndarray]]:
    """The numeric columns and the vehicle key (an index into ``names``) of one file, in
    chunks of rows."""
    try:  # plain or gzip (told by content)
        f = io.TextIOWrapper(open_input(path), encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ImportFailed(f"cannot read {path}: {exc.strerror}") from exc
    with f:
        try:
            rows = _rows(path, f)
            first = next(rows)
            index, location, header = _layout(path, first)
            if not header:
                rows = chain([first], rows)
            yield from _chunks(path, rows, index, location, names, progress)
        except UnicodeDecodeError as exc:
            raise ImportFailed(f"{path}: not a text file ({exc.reason})") from None
        except csv.Error as exc:
            raise ImportFailed(f"{path}: not a readable CSV file ({exc})") from None
        except READ_ERRORS as exc:  # a truncated or corrupt gzip file
            raise ImportFailed(f"cannot read {path}: {exc}") from None


def _rows(path: Path, f: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of the non-blank lines: comma-separated when the first line
    has a comma, else separated by runs of whitespace (the original text files)."""
    no = 0
    for no, line in enumerate(f, start=1):  # noqa: B007 - the line number is used below
        if line.strip():
            break
    else:
        raise ImportFailed(f"{path}: the file is empty")
    lines = chain([line], f)
    if "," in line:
        reader = csv.reader(lines)
        for fields in reader:
            if len(fields) > 1 or (fields and fields[0].strip()):
                yield no - 1 + reader.line_num, fields
    else:
        for n, text in enumerate(lines, start=no):
            fields = text.split()
            if fields:
                yield n, fields


def _layout(path: Path, first: tuple[int, list[str]]) -> tuple[dict[str, int], int | None, bool]:
    """Index of each needed column and of Location (None when absent), and whether the
    first row is a header."""
    fields = [f.strip() for f in first[1]]
    try:
        float(fields[0])
    except ValueError:
        pass
    else:  # an original text file: no header, fixed positions
        if len(fields) <= max(i for _, i in _COLUMNS.values()):
            raise ImportFailed(f"{path}: line {first[0]} has {len(fields)} fields; an NGSIM "
                               f"file without a header has at least 12")
        return {name: i for name, (_, i) in _COLUMNS.items()}, None, False
    lower = [f.lower() for f in fields]
    index, missing = {}, []
    for name, (aliases, _) in _COLUMNS.items():
        found = [i for i, f in enumerate(lower) if f in aliases]
        if found:
            index[name] = found[0]
        else:
            missing.append(name)
    if missing:
        raise ImportFailed(f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(missing)} (an NGSIM trajectory file has "
                           f"{', '.join(_COLUMNS)})")
    location = lower.index("location") if "location" in lower else None
    return index, location, True


def _chunks(path: Path, rows: Iterator[tuple[int, list[str]]], index: dict[str, int],
            location: int | None, names: dict[tuple[str, str], int],
            progress: Callable[[int], None] | None) -> Iterator[dict[str, np.ndarray]]:
    need = max([*index.values(), -1 if location is None else location]) + 1
    vid_i = index["Vehicle_ID"]
    numeric = [(name, index[name]) for name in _NUMERIC]
    stem = path.stem
    while True:
        texts: dict[str, list[str]] = {name: [] for name in _NUMERIC}
        keys, line_nos = array("q"), array("q")
        for no, fields in rows:
            if len(fields) < need:
                raise ImportFailed(f"{path}: line {no} has {len(fields)} fields, expected "
                                   f"at least {need}; is the file truncated?")
            for name, i in numeric:
                texts[name].append(fields[i])
            vid = _vehicle_id(fields[vid_i])
            if not vid:
                raise ImportFailed(f"{path}: line {no}: Vehicle_ID is empty")
            loc = (fields[location].strip() if location is not None else "") or stem
            keys.append(names.setdefault((loc, vid), len(names)))
            line_nos.append(no)
            if len(keys) == _CHUNK_ROWS:
                break
        if not keys:
            return
        chunk = {name: _floats(path, name, texts[name], line_nos) for name in _NUMERIC}
        chunk["key"] = np.frombuffer(keys, dtype=np.int64).copy()
        if progress is not None:
            progress(len(keys))
        yield chunk


def _vehicle_id(text: str) -> str:
    """``42``, `` 42 `` and ``42.0`` are the same vehicle."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if math.isfinite(value) and value == int(value) else text


def _floats(path: Path, name: str, texts: list[str], line_nos: array[int]) -> np.ndarray:
    try:
        values = np.array(texts, dtype=np.float64)
    except ValueError:
        values = None
    if values is not None and np.isfinite(values).all():
        return values
    for text, no in zip(texts, line_nos, strict=True):
        try:
            ok = math.isfinite(float(text))
        except ValueError:
            ok = False
        if not ok:
            raise ImportFailed(f"{path}: line {no}: {name} is not a finite number: "
                               f"{text.strip()!r}")
    raise AssertionError("unreachable")  # pragma: no cover
