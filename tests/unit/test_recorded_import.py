"""`trajstream data import`: hand-made CommonRoad and NGSIM samples give exactly the records
worked out by hand; bad files give one error line; the real CommonRoad scenario gives the
recorded data set's records.

The samples are in tests/data/recorded. NGSIM (feet): vehicle 1 drives straight up the road
(+Local_Y, 3 ft a frame, heading pi/2); vehicle 2 changes lanes on a 3-4-5 slope (heading
atan2(4, 3) = 0.9273, front-to-centre offset 10 ft x (0.6, 0.8) = (6, 8) ft); vehicle 3 is a
40 ft truck that never moves (faces along the road); vehicle 1's id comes back 15 minutes
later (another vehicle: ``i-80/1#2``); one row is repeated; one row has padded fields.
"""

from __future__ import annotations

import gzip
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from trajstream.simulator.recorded import ImportFailed, message_lines, read_commonroad
from trajstream.simulator.recorded.location import recorded_data_dir
from trajstream.simulator.recorded.ngsim import MAX_LOOKBACK_ROWS, motion_heading, read_ngsim

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "tests" / "data" / "recorded"
COMMONROAD = SAMPLES / "ZAM_Sample-1_1_T-1.xml"
NGSIM_CSV = SAMPLES / "ngsim-i80-sample.csv"
NGSIM_TXT = SAMPLES / "trajectories-sample.txt"

S = "ZAM_Sample-1_1_T-1"
COMMONROAD_EXPECTED = [
    # car 10 (4.8 x 2.0), pedestrian 30 (circle r 0.35: no orientation, so no heading), truck
    # 20 from step 1; slot 0 starts at 2026-01-01T00:00:00Z, steps of 0.1 s
    {"vehicle_id": f"{S}/10", "ts": 1767225600.0, "x": 0.0, "y": 0.0, "speed": 10.0,
     "heading": 0.0, "length": 4.8, "width": 2.0},
    {"vehicle_id": f"{S}/30", "ts": 1767225600.0, "x": 10.0, "y": -5.0, "speed": 1.4,
     "length": 0.7, "width": 0.7},
    {"vehicle_id": f"{S}/10", "ts": 1767225600.1, "x": 1.0, "y": 0.0, "speed": 10.0,
     "heading": 0.0, "length": 4.8, "width": 2.0},
    {"vehicle_id": f"{S}/20", "ts": 1767225600.1, "x": 30.0, "y": 3.5, "speed": 8.0,
     "heading": 3.1416, "length": 12.0, "width": 2.55},
    {"vehicle_id": f"{S}/10", "ts": 1767225600.2, "x": 2.0, "y": 0.05, "speed": 10.2,
     "heading": 0.05, "length": 4.8, "width": 2.0},
    {"vehicle_id": f"{S}/20", "ts": 1767225600.2, "x": 29.2, "y": 3.5, "speed": 8.0,
     "heading": 3.1416, "length": 12.0, "width": 2.55},
    {"vehicle_id": f"{S}/30", "ts": 1767225600.2, "x": 10.0, "y": -4.72, "speed": 1.4,
     "length": 0.7, "width": 0.7},
    {"vehicle_id": f"{S}/20", "ts": 1767225600.3, "x": 28.4, "y": 3.5, "speed": 8.0,
     "heading": 3.1416, "length": 12.0, "width": 2.55},
]

FT = 0.3048


def _ngsim_expected(prefix: str) -> list[dict[str, object]]:
    """Worked out in feet, then converted: centre = front - length/2 x (cos, sin) heading."""
    out = []
    for k in range(5):
        ts = round(1113433135.3 + 0.1 * k, 3)
        # vehicle 1: front (12, 100 + 3k) ft, 15 x 6 ft, 30 ft/s, heading pi/2
        out.append({"vehicle_id": f"{prefix}/1", "ts": ts, "x": 3.658,
                    "y": [28.194, 29.108, 30.023, 30.937, 31.852][k], "speed": 9.144,
                    "heading": 1.5708, "length": 4.57, "width": 1.83})
        # vehicle 2: front (24 + 3k, 200 + 4k) ft, centre (18 + 3k, 192 + 4k) ft, 20 x 7 ft
        out.append({"vehicle_id": f"{prefix}/2", "ts": ts,
                    "x": [5.486, 6.401, 7.315, 8.23, 9.144][k],
                    "y": [58.522, 59.741, 60.96, 62.179, 63.398][k], "speed": 15.24,
                    "heading": 0.9273, "length": 6.1, "width": 2.13})
        if k >= 2:  # vehicle 3: front (60, 400) ft, 40 x 8.5 ft, centre (60, 380) ft
            out.append({"vehicle_id": f"{prefix}/3", "ts": ts, "x": 18.288, "y": 115.824,
                        "speed": 0.0, "heading": 1.5708, "length": 12.19, "width": 2.59})
    return out


NGSIM_EXPECTED = _ngsim_expected("i-80") + [
    # vehicle id 1 again, 900 s later: front (12, 50) ft, 14 x 6 ft, 20 ft/s, one frame
    {"vehicle_id": "i-80/1#2", "ts": 1113434035.3, "x": 3.658, "y": 13.106, "speed": 6.096,
     "heading": 1.5708, "length": 4.27, "width": 1.83},
]


def _records(lines: object) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in lines]  # type: ignore[attr-defined]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAJSTREAM_")}
    return subprocess.run([sys.executable, "-m", "trajstream", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


# --- CommonRoad ----------------------------------------------------------------------------

def test_commonroad_sample_gives_the_hand_worked_records() -> None:
    positions, stateless = read_commonroad([COMMONROAD])
    assert _records(message_lines(positions)) == COMMONROAD_EXPECTED
    assert stateless == 0


def test_commonroad_scenarios_get_their_own_event_time_slots(tmp_path: Path) -> None:
    other = tmp_path / "other.xml"
    other.write_text(COMMONROAD.read_text().replace(S, "ZAM_Other-1_1_T-1"))
    positions, _ = read_commonroad([COMMONROAD, other], start_ts=1000.0, slot_s=10.0)
    got = _records(message_lines(positions))
    first = [r for r in got if str(r["vehicle_id"]).startswith(S)]
    second = [r for r in got if str(r["vehicle_id"]).startswith("ZAM_Other")]
    assert [r["ts"] for r in first] == [round(1000.0 + float(r["ts"]) - 1767225600.0, 3)
                                        for r in COMMONROAD_EXPECTED]
    assert [r["ts"] for r in second] == [round(float(r["ts"]) + 10.0, 3) for r in first]
    assert got == first + second, "sorted by event time: the second slot comes after"


def test_commonroad_scenarios_that_would_collide_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="already in"):
        read_commonroad([COMMONROAD, COMMONROAD])
    with pytest.raises(ImportFailed, match=r"lasts 0.3 s, longer than a slot of 0.2 s"):
        read_commonroad([COMMONROAD], slot_s=0.2)


def test_commonroad_2018b_obstacles_are_read(tmp_path: Path) -> None:
    old = tmp_path / "old.xml"
    old.write_text(
        '<commonRoad benchmarkID="OLD-1" commonRoadVersion="2018b" timeStepSize="0.2">'
        '<obstacle id="5"><role>dynamic</role><type>car</type>'
        "<shape><rectangle><length>4</length><width>1.5</width></rectangle></shape>"
        "<trajectory><state><position><point><x>1</x><y>2</y></point></position>"
        "<orientation><exact>0.5</exact></orientation><time><exact>3</exact></time>"
        "<velocity><exact>7</exact></velocity></state></trajectory></obstacle>"
        '<obstacle id="6"><role>static</role><type>parkedVehicle</type></obstacle>'
        "</commonRoad>")
    positions, stateless = read_commonroad([old], start_ts=100.0)
    assert _records(message_lines(positions)) == [
        {"vehicle_id": "OLD-1/5", "ts": 100.6, "x": 1.0, "y": 2.0, "speed": 7.0,
         "heading": 0.5, "length": 4.0, "width": 1.5}]
    assert stateless == 0


def _data_dir() -> Path:
    return recorded_data_dir()


def test_real_commonroad_scenario_matches_the_recorded_data_set_record_by_record() -> None:
    """USA_Peach-1_1_T-1 (NGSIM Peachtree, as CommonRoad publishes it) is slot 0 of
    ngsim-peachtree.jsonl.gz: the import must give its records byte for byte."""
    data = _data_dir()
    scenario = data / "commonroad" / "USA_Peach-1_1_T-1.xml"
    recorded = data / "ngsim-peachtree.jsonl.gz"
    if not (scenario.is_file() and recorded.is_file()):
        pytest.skip(f"recorded NGSIM data not found in {data} (set TRAJSTREAM_DATA_DIR)")
    positions, _ = read_commonroad([scenario])
    with gzip.open(recorded) as f:
        expected = [line.rstrip(b"\n") for line in f if b'"USA_Peach-1_1_T-1/' in line]
    got = list(message_lines(positions))
    assert len(got) == len(expected) == 93
    assert got == expected


# --- NGSIM ---------------------------------------------------------------------------------

def test_ngsim_csv_sample_gives_the_hand_worked_records() -> None:
    imported = read_ngsim([NGSIM_CSV])
    assert _records(message_lines(imported.positions)) == NGSIM_EXPECTED
    assert (imported.rows, imported.duplicates, imported.standing) == (15, 1, 2)


def _gz(tmp: Path, cut: int = 0) -> Path:
    """The NGSIM sample gzip-compressed, the last ``cut`` bytes of the stream gone."""
    path = tmp / "ngsim.csv.gz"
    packed = gzip.compress(NGSIM_CSV.read_bytes())
    path.write_bytes(packed[:len(packed) - cut])
    return path


def test_ngsim_gzip_gives_the_same_records(tmp_path: Path) -> None:
    imported = read_ngsim([_gz(tmp_path)])
    assert _records(message_lines(imported.positions)) == NGSIM_EXPECTED


def test_ngsim_original_text_layout_gives_the_same_records() -> None:
    """No header, whitespace-separated, 18 columns; vehicles are named after the file."""
    imported = read_ngsim([NGSIM_TXT])
    assert _records(message_lines(imported.positions)) == _ngsim_expected(
        "trajectories-sample")


def test_ngsim_export_quirks_change_nothing(tmp_path: Path) -> None:
    """A byte-order mark, CRLF line ends, a leading index column, other capitalisation of
    the names, blank lines and ids written as floats."""
    lines = NGSIM_CSV.read_text().splitlines()
    header = "," + lines[0].replace("v_length", "v_Length").upper().replace("V_VEL", "v_vel")
    body = [f"{i},{line}" for i, line in enumerate(lines[1:]) if line]
    body = [b.replace(",3,102,", ",3.0,102,") for b in body]
    quirky = tmp_path / "ngsim-i80-sample.csv"
    quirky.write_bytes(("\ufeff" + "\r\n".join([header, body[0], "", *body[1:]]) + "\r\n\r\n")
                       .encode("utf-8"))
    assert _records(message_lines(read_ngsim([quirky]).positions)) == NGSIM_EXPECTED


def test_ngsim_metric_reexport_with_units_metres(tmp_path: Path) -> None:
    header, *rows = NGSIM_CSV.read_text().splitlines()
    metric = [header]
    for row in rows:
        f = [x.strip() for x in row.split(",")]
        if f[0] != "2":
            continue
        for i in (4, 5, 8, 9, 11):  # Local_X, Local_Y, v_length, v_Width, v_Vel
            f[i] = repr(float(f[i]) * FT)
        metric.append(",".join(f))
    path = tmp_path / "metric.csv"
    path.write_text("\n".join(metric) + "\n")
    got = _records(message_lines(read_ngsim([path], units="metres").positions))
    assert got == [r for r in NGSIM_EXPECTED if r["vehicle_id"] == "i-80/2"]
    with pytest.raises(ImportFailed, match=r"0\.\d\d m wide.*--units metres"):
        read_ngsim([path])


def test_heading_looks_back_only_and_holds_through_a_stop() -> None:
    """East 1 m a row for 10 rows, a stop longer than the look-back, then north; a second
    track that never moves faces along the road."""
    east = [(float(i), 0.0) for i in range(10)]
    stop = [(9.0, 0.0)] * (MAX_LOOKBACK_ROWS + 20)
    north = [(9.0, float(j)) for j in range(1, 11)]
    xy = np.array(east + stop + north + [(5.0, 5.0)] * 3)
    track = np.array([0] * (len(xy) - 3) + [1] * 3)
    heading, guessed = motion_heading(track, xy[:, 0], xy[:, 1])
    assert np.allclose(heading[:len(east) + len(stop)], 0.0), "east, held while standing"
    assert np.allclose(heading[-6:-3], math.pi / 2), "north once it has moved 2 m north"
    assert np.allclose(heading[-3:], math.pi / 2)
    assert guessed.tolist() == [False] * (len(xy) - 3) + [True] * 3
    for i in range(2, len(xy) - 3):  # nothing after row i changes row i
        assert motion_heading(track[:i + 1], xy[:i + 1, 0], xy[:i + 1, 1])[0][i] == heading[i]


# --- the command ---------------------------------------------------------------------------

def test_command_writes_the_file_and_says_what_it_did(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    res = _run("data", "import", "--format", "ngsim", str(NGSIM_CSV), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert _records(out.read_bytes().splitlines()) == NGSIM_EXPECTED
    assert res.stderr == ("trajstream data import: wrote 14 positions of 4 vehicles (15 rows; "
                          "1 duplicate row dropped; 2 vehicles never moved 2 m, taken to face "
                          f"along the road) to {out}\n")
    res = _run("data", "import", "--format", "commonroad", str(COMMONROAD), "--out", "-")
    assert res.returncode == 0, res.stderr
    assert _records(res.stdout.splitlines()) == COMMONROAD_EXPECTED


def _truncated_xml(tmp: Path) -> Path:
    text = COMMONROAD.read_text()
    path = tmp / "truncated.xml"
    path.write_text(text[: len(text) // 2])
    return path


def _missing_columns(tmp: Path) -> Path:
    lines = NGSIM_CSV.read_text().splitlines()
    path = tmp / "missing.csv"
    path.write_text("\n".join(line.rsplit(",", 17)[0] for line in lines) + "\n")
    return path  # Global_X onwards gone: no v_length, v_Width, v_Vel


def _truncated_csv(tmp: Path) -> Path:
    text = NGSIM_CSV.read_text()
    path = tmp / "cut.csv"
    path.write_text(text[: text.index("2,103,5")] + "2,103,5,11134331")
    return path


def _not_a_number(tmp: Path) -> Path:
    path = tmp / "nan.csv"
    path.write_text(NGSIM_CSV.read_text().replace("33.000,212.000", "33.000,abc"))
    return path


def _write(name: str, text: str) -> object:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_text(text)
        return path
    return make


@pytest.mark.parametrize(
    ("fmt", "make", "extra", "says"),
    [
        ("commonroad", _truncated_xml, [],
         "not well-formed XML (unclosed token: line 120, column 8); is the file truncated?"),
        ("commonroad", _write("empty.xml", ""), [], "empty.xml: the file is empty"),
        ("commonroad", _write("other.xml", "<osm/>"), [], "not a CommonRoad scenario"),
        ("commonroad", _write("nodt.xml", "<commonRoad/>"), [], "timeStepSize"),
        ("commonroad", _write("bad.xml", '<commonRoad timeStepSize="0.1"><dynamicObstacle '
                              'id="7"><initialState><position><point><x>1</x></point>'
                              "</position><time><exact>0</exact></time></initialState>"
                              "</dynamicObstacle></commonRoad>"),
         [], "obstacle 7, time step 0: position y is missing"),
        ("commonroad", lambda tmp: COMMONROAD, ["--units", "metres"],
         "--units applies to --format ngsim only"),
        ("ngsim", _missing_columns, [], "missing columns v_Length, v_Width, v_Vel"),
        ("ngsim", lambda tmp: NGSIM_CSV, ["--units", "metres"], "--units feet"),
        ("ngsim", lambda tmp: NGSIM_CSV, ["--units", "yards"], "--units"),
        ("ngsim", _truncated_csv, [], "line 10 has 4 fields, expected at least 25"),
        ("ngsim", _not_a_number, [], "line 10: Local_Y is not a finite number: 'abc'"),
        ("ngsim", _write("empty.csv", "\n\n"), [], "empty.csv: the file is empty"),
        ("ngsim", _write("head.csv", NGSIM_CSV.read_text().splitlines()[0]), [],
         "head.csv: no data rows"),
        ("ngsim", lambda tmp: NGSIM_CSV, ["--slot-s", "30"],
         "--slot-s applies to --format commonroad only"),
        ("ngsim", lambda tmp: tmp / "absent.csv", [], "does not exist"),
        ("commonroad", _write("none.xml", '<commonRoad timeStepSize="0.1"/>'), [],
         "no positions to write (1 scenario)"),
        ("ngsim", lambda tmp: _gz(tmp, cut=30), [], "cannot read"),
    ],
)
def test_bad_files_give_one_clear_error_line(fmt: str, make, extra: list[str], says: str,
                                             tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    res = _run("data", "import", "--format", fmt, str(make(tmp_path)), "--out", str(out),
               *extra)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajstream: error:"), res.stderr
    assert says in lines[0], res.stderr
    assert not out.exists(), "nothing written from a bad file"
