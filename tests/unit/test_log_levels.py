"""--log-level: the level of every log, then of single loggers (LOGGER=LEVEL)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import click
import pytest

from trajstream.cli import LogLevels, main


@pytest.mark.parametrize("value, parsed", [
    ("INFO", ("INFO", {})),
    ("warning", ("WARNING", {})),
    ("ERROR,kafka.coordinator=DEBUG", ("ERROR", {"kafka.coordinator": "DEBUG"})),
    ("kafka=debug", ("INFO", {"kafka": "DEBUG"})),
    (" INFO , a.b = WARNING ,c=ERROR", ("INFO", {"a.b": "WARNING", "c": "ERROR"})),
])
def test_levels_are_read(value: str, parsed: tuple[str, dict[str, str]]) -> None:
    assert LogLevels().convert(value, None, None) == parsed


@pytest.mark.parametrize("value, says", [
    ("LOUD", "'LOUD' is not a level (DEBUG, INFO, WARNING, ERROR)"),
    ("INFO,kafka=LOUD", "'LOUD' is not a level"),
    ("INFO,kafka=", "'kafka=' is not a level"),
    ("INFO,DEBUG", "only the first item may be a bare level, got 'DEBUG'"),
    ("INFO,=DEBUG", "no logger name before '=' in '=DEBUG'"),
])
def test_a_bad_value_is_a_usage_error_naming_it(value: str, says: str) -> None:
    with pytest.raises(click.BadParameter, match=re.escape(says)):
        LogLevels().convert(value, None, None)


@pytest.fixture
def restored_levels() -> Iterator[None]:
    names = ["trajstream.test_log_levels", "kafka.coordinator"]
    before = {n: logging.getLogger(n).level for n in names}
    yield
    for n, level in before.items():
        logging.getLogger(n).setLevel(level)


def test_a_logger_named_gets_its_level_before_the_command_runs(
        restored_levels: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-level", "WARNING,trajstream.test_log_levels=DEBUG,kafka.coordinator="
                 "INFO", "simulate", "--help"]) == 0
    assert logging.getLogger("trajstream.test_log_levels").level == logging.DEBUG
    assert logging.getLogger("kafka.coordinator").level == logging.INFO
    # kafka-python's adapter keeps the client to its errors, but not a logger set here
    import trajstream.stream.kafka._kafkapython  # noqa: F401

    assert logging.getLogger("kafka.coordinator").getEffectiveLevel() == logging.INFO


def test_a_bad_level_stops_at_start_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-level", "INFO,kafka=LOUD", "simulate", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trajstream: error: Invalid value for '--log-level'")
    assert "'LOUD' is not a level" in err and err.count("\n") == 1


def test_log_level_after_the_subcommand_says_where_it_goes(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--log-level", "DEBUG"]) == 2
    err = capsys.readouterr().err
    assert "No such option '--log-level'" in err
    assert "it is trajstream's own: trajstream --log-level ... SUBCOMMAND" in err
