"""Outputs never destroy inputs: files compared by identity, written then renamed, disk full
as one line. Commands run through trajstream.cli.main, as a user runs them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from trajstream.cli import main
from trajstream.errors import ConfigError
from trajstream.outputs import OutputError, OutputFile, refuse_aliases, same_file

sys.path.insert(0, str(Path(__file__).parent))
from test_engine import crossing_traffic  # noqa: E402

HAS_DEV_FULL = Path("/dev/full").exists()


@pytest.fixture()
def positions(tmp_path: Path) -> Path:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(crossing_traffic(seed=4)) + b"\n")
    return src


def _aliases(src: Path) -> dict[str, str]:
    """Other names of ``src``: relative with ./, absolute, a symlink, a hard link."""
    d = src.parent
    (d / "link.jsonl").symlink_to(src)
    os.link(src, d / "hard.jsonl")
    return {"dot": f"./{src.name}", "absolute": str(src.resolve()),
            "symlink": str(d / "link.jsonl"), "hardlink": str(d / "hard.jsonl")}


def test_same_file_compares_files_not_strings(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "a.jsonl"
    src.write_bytes(b"x\n")
    monkeypatch.chdir(tmp_path)
    for name in _aliases(src).values():
        assert same_file("a.jsonl", name), name
    assert same_file("new.jsonl", str(tmp_path / "new.jsonl"))  # not created yet
    assert not same_file("a.jsonl", "b.jsonl")
    assert not same_file("-", "-")
    with pytest.raises(ConfigError, match="--out .* same file as --input"):
        refuse_aliases({"--input": "a.jsonl"}, {"--out": "link.jsonl"})
    with pytest.raises(ConfigError, match="--out .* and --truth .* same file"):
        refuse_aliases({}, {"--out": "b.jsonl", "--truth": "./b.jsonl"})
    refuse_aliases({"--input": "-"}, {"--out": "-", "--truth": "-"})


def test_output_file_is_renamed_on_success_and_discarded_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old\n")
    out = OutputFile(target)
    out.write(b"new\n")
    assert target.read_bytes() == b"old\n", "readers never see a half-written file"
    out.discard()
    assert target.read_bytes() == b"old\n" and os.listdir(tmp_path) == ["out.jsonl"]
    out = OutputFile(target)
    out.write(b"new\n")
    out.commit()
    assert target.read_bytes() == b"new\n" and os.listdir(tmp_path) == ["out.jsonl"]


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
def test_output_file_full_disk_is_one_error() -> None:
    out = OutputFile("/dev/full")
    with pytest.raises(OutputError, match="cannot write /dev/full: No space left"):
        out.write(b"x" * 100_000)
        out.commit()


@pytest.mark.parametrize("alias", ["dot", "absolute", "symlink", "hardlink"])
@pytest.mark.parametrize("flag", ["--alerts-out", "--dlq-out", "--predictions-out"])
def test_process_refuses_an_output_that_is_the_input(positions: Path, monkeypatch, capsys,
                                                     alias: str, flag: str) -> None:
    before = positions.read_bytes()
    monkeypatch.chdir(positions.parent)
    name = _aliases(positions)[alias]
    argv = ["process", "--input", positions.name, "--predictor", "cv", "--metrics-port", "0"]
    argv += ["--alerts-out", "alerts.jsonl"] if flag != "--alerts-out" else []
    assert main([*argv, flag, name]) == 2
    err = capsys.readouterr().err.strip()
    assert "same file as --input" in err and len(err.splitlines()) == 1, err
    assert positions.read_bytes() == before


def test_simulate_refuses_out_equal_to_truth(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--out", "s.jsonl", "--truth", "./s.jsonl", "--duration", "1",
                 "--no-pace"]) == 2
    assert "same file" in capsys.readouterr().err
    assert not (tmp_path / "s.jsonl").exists()


def test_data_import_refuses_to_overwrite_its_input(tmp_path: Path, capsys) -> None:
    src = tmp_path / "ngsim.csv"
    src.write_text("Vehicle_ID,Frame_ID\n1,1\n")
    before = src.read_bytes()
    assert main(["data", "import", "--format", "ngsim", str(src), "--out",
                 str(tmp_path / "." / "ngsim.csv")]) == 2
    assert "same file as INPUT 1" in capsys.readouterr().err
    assert src.read_bytes() == before


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
@pytest.mark.parametrize("flag", ["--alerts-out", "--dlq-out"])
def test_process_disk_full_is_one_line_and_nonzero(positions: Path, capsys, flag: str) -> None:
    with positions.open("ab") as f:
        f.write(b"not json\n" * 2000)  # dead letters to write
    argv = ["process", "--input", str(positions), "--predictor", "cv", "--metrics-port", "0",
            "--alerts-out", str(positions.parent / "alerts.jsonl"), flag, "/dev/full"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("cannot write /dev/full: No space left on device"), err
    assert "Traceback" not in err


def test_a_failed_process_run_leaves_an_existing_output_as_it_was(positions: Path,
                                                                  capsys) -> None:
    with positions.open("ab") as f:
        f.write(b"not json\n" * 2000)  # dead letters to write
    alerts = positions.parent / "alerts.jsonl"
    alerts.write_bytes(b"previous run\n")
    argv = ["process", "--input", str(positions), "--predictor", "cv", "--metrics-port", "0",
            "--alerts-out", str(alerts)]
    if HAS_DEV_FULL:
        assert main([*argv, "--dlq-out", "/dev/full"]) == 1
        assert alerts.read_bytes() == b"previous run\n"
    assert main(argv) == 0
    assert alerts.read_bytes().count(b"\n") == 2  # the crossing's warning and critical
    assert sorted(os.listdir(positions.parent)) == ["alerts.jsonl", "in.jsonl"]
