"""Positions files plain or gzip, whatever their name, for every command that reads them."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.unit.test_engine import crossing_traffic
from trajstream.cli import main
from trajstream.errors import TrajstreamError
from trajstream.simulator.publish import ReplayFile
from trajstream.stream.evaluation.tracks import read_lines
from trajstream.stream.sources import FileSource


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    text = b"\n".join(crossing_traffic(seed=4)) + b"\n"
    plain, packed, renamed = (tmp_path / n for n in ("p.jsonl", "p.jsonl.gz", "p2.jsonl"))
    plain.write_bytes(text)
    packed.write_bytes(gzip.compress(text))
    renamed.write_bytes(gzip.compress(text))  # gzip under a plain name: told by content
    return {"plain": plain, "gz": packed, "renamed": renamed}


def _all(source: FileSource) -> list[bytes]:
    out: list[bytes] = []
    while not source.exhausted:
        out += source.poll(1000).values
    source.close()
    return out


def test_every_reader_gives_the_same_lines_from_plain_and_gzip(files: dict[str, Path]) -> None:
    want = _all(FileSource(str(files["plain"])))
    assert len(want) > 100
    for name in ("gz", "renamed"):
        assert _all(FileSource(str(files[name]))) == want
        assert list(read_lines(files[name])) == want
        assert [v for _, _, v in ReplayFile(files[name])] == want


def test_process_writes_the_same_alerts_from_a_gzip_file(files: dict[str, Path],
                                                         tmp_path: Path) -> None:
    outs = []
    for name in ("plain", "renamed"):
        out = tmp_path / f"{name}.alerts"
        assert main(["--log-level", "ERROR", "process", "--input", str(files[name]),
                     "--alerts-out", str(out), "--predictor", "cv", "--metrics-port", "0"]) == 0
        outs.append(out.read_bytes())
    assert outs[0] and outs[0] == outs[1]


def test_a_truncated_gzip_file_is_one_error_line_and_no_output(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(files["gz"].read_bytes()[:-40])
    out = tmp_path / "a.jsonl"
    assert main(["--log-level", "ERROR", "process", "--input", str(cut), "--alerts-out",
                 str(out), "--predictor", "cv", "--metrics-port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"trajstream: error: cannot read --input {cut}: ") and \
        len(err.splitlines()) == 1, err
    assert not out.exists()
    with pytest.raises(TrajstreamError, match="cannot read"):
        list(ReplayFile(cut))
