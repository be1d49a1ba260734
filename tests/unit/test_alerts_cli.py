"""stream.alerts_cli: one readable line per alert, robust to odd alert contents; what is
not an alert."""

from __future__ import annotations

import os
import signal
import threading
import time

import click
import pytest

from trajstream.stream.alerts_cli import _looks_like_position, _not_an_alert, format_alert

ALERT = {
    "schema": "trajstream.alert/v1",
    "alert_id": "x",
    "vehicle_a": "veh-12",
    "vehicle_b": "veh-40",
    "severity": "critical",
    "ts": 1764081005.2,  # 2025-11-25 14:30:05.200 UTC
    "ttc": 1.24,
    "min_distance": 0.84,
    "closest_approach": {"ts": 1764081006.44, "x": 123.44, "y": -56.66},
}


def test_plain_line() -> None:
    assert format_alert(ALERT, color=False) == (
        "14:30:05.200 CRITICAL veh-12 <> veh-40  ttc 1.2 s  min 0.8 m  at (123.4, -56.7)"
    )


def test_warning_padded_like_critical() -> None:
    line = format_alert({**ALERT, "severity": "warning"}, color=False)
    assert line.startswith("14:30:05.200 WARNING  veh-12")


def test_milliseconds_truncated_not_rounded_past_the_second() -> None:
    line = format_alert({**ALERT, "ts": 1764081005.9996}, color=False)
    assert line.startswith("14:30:05.999 ")


def test_colour_only_on_severity() -> None:
    line = format_alert(ALERT, color=True)
    assert "\x1b[" in line
    assert click.unstyle(line) == format_alert(ALERT, color=False)
    assert line.index("\x1b[") > line.index("14:30:05.200")
    warn = format_alert({**ALERT, "severity": "warning"}, color=True)
    assert warn != line and click.unstyle(warn).split()[1] == "WARNING"


def test_missing_and_malformed_fields_do_not_raise() -> None:
    assert format_alert({}, color=True) == "??:??:??.??? ?        ? <> ?  ttc ?  min ?  at ?"
    odd = {
        **ALERT,
        "ts": "yesterday",
        "ttc": None,
        "min_distance": True,
        "closest_approach": {"x": "a"},
        "severity": "panic",
    }
    line = format_alert(odd, color=True)
    assert "\x1b[" not in line  # unknown severity: no colour
    assert line.startswith("??:??:??.??? PANIC")
    assert "ttc ?  min ?  at" in line and line.endswith("at ?")
    assert format_alert({**ALERT, "ts": 1e300}, color=False).startswith("??:??:??.???")


def test_what_is_not_an_alert() -> None:
    assert _not_an_alert(ALERT) is None
    assert _not_an_alert(None) == "not JSON"
    assert _not_an_alert([ALERT]) == "not a JSON object"
    assert _not_an_alert({"vehicle_id": "v", "ts": 1.0, "x": 0, "y": 0}) == (
        "no vehicle_a, vehicle_b, severity")


def test_what_looks_like_a_position() -> None:
    assert _looks_like_position({"vehicle_id": "v", "ts": 1.0, "x": 0, "y": 0})
    assert _looks_like_position({"vehicle_id": "v", "ts": 1.0, "lat": 48.1, "lon": 11.6})
    assert not _looks_like_position({"vehicle_id": "v", "ts": 1.0, "points": [[0, 0]]})
    assert not _looks_like_position(ALERT)


def test_ctrl_c_while_waiting_for_the_broker_exits_0_quietly(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C stops `alerts` with exit 0 (its --help says so), also before the broker has
    answered; it used to be a KeyboardInterrupt there, exit 130."""
    from trajstream.cli import main

    default = signal.getsignal(signal.SIGINT)

    def interrupt() -> None:
        give_up = time.monotonic() + 10.0  # then interrupt anyway: the old behaviour fails
        while signal.getsignal(signal.SIGINT) is default and time.monotonic() < give_up:
            time.sleep(0.01)
        time.sleep(0.2)  # inside the connect wait (its retries to the closed port)
        os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=interrupt)
    sender.start()
    started = time.monotonic()
    code = main(["alerts", "--bootstrap", "127.0.0.1:1", "--connect-timeout", "60"])
    sender.join()
    assert code == 0
    assert time.monotonic() - started < 30
    assert capsys.readouterr().err == ""

