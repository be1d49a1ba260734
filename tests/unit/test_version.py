"""`trajstream --version`: the package's version, the one pyproject.toml releases."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from trajstream import __version__
from trajstream.cli import main


def test_version_is_printed_and_matches_the_release(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"trajstream {__version__}\n"
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert tomllib.loads(pyproject.read_text())["project"]["version"] == __version__
