"""Every runtime error is one line and a non-zero exit: broken weights, an input of which
nothing is accepted, contradictory sources. Commands run through trajstream.cli.main."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from trajstream.cli import main
from trajstream.model import SHIPPED_WEIGHTS
from trajstream.model.weights_io import LstmWeights

sys.path.insert(0, str(Path(__file__).parent))
from test_engine import crossing_traffic  # noqa: E402


def _truncated(p: Path) -> None:
    p.write_bytes(SHIPPED_WEIGHTS.read_bytes()[:5000])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _text(p: Path) -> None:
    p.write_text("these are not weights\n")


def _rewritten(change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    def write(p: Path) -> None:
        with np.load(SHIPPED_WEIGHTS, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        change(arrays)
        with p.open("wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
    return write


def _wrong_shape(a: dict[str, np.ndarray]) -> None:
    a["kernel"] = a["kernel"][:, :-4]


def _all_nan(a: dict[str, np.ndarray]) -> None:
    for k in a:
        if k != "header":
            a[k] = np.full_like(a[k], np.nan)


def _missing_array(a: dict[str, np.ndarray]) -> None:
    del a["out_w"]


BROKEN = {
    "truncated": (_truncated, "not a trajstream weights file"),
    "empty": (_empty, "not a trajstream weights file"),
    "text": (_text, "not a trajstream weights file"),
    "wrong_shape": (_rewritten(_wrong_shape), "kernel has shape"),
    "all_nan": (_rewritten(_all_nan), "NaN or infinite"),
    "missing_array": (_rewritten(_missing_array), "no array out_w"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_weights_are_one_line_for_evaluate_and_process(tmp_path: Path, capsys,
                                                              case: str) -> None:
    write, message = BROKEN[case]
    weights = tmp_path / "lstm.npz"
    write(weights)
    positions = tmp_path / "in.jsonl"
    positions.write_bytes(b"\n".join(crossing_traffic(seed=4)) + b"\n")
    runs = [["model", "evaluate", "--data", str(positions), "--weights", str(weights)],
            ["--log-level", "ERROR", "process", "--input", str(positions), "--alerts-out",
             str(tmp_path / "alerts.jsonl"), "--metrics-port", "0", "--weights", str(weights)]]
    for argv in runs:
        assert main(argv) == 2, argv  # settings that cannot run: exit 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert "allow_pickle" not in err and "unsafe" not in err  # numpy's advice is not ours
    assert not (tmp_path / "alerts.jsonl").exists()


def _weights_runs(tmp_path: Path, *extra: str) -> list[list[str]]:
    positions = tmp_path / "in.jsonl"
    positions.write_bytes(b"\n".join(crossing_traffic(seed=4)) + b"\n")
    return [["model", "evaluate", "--data", str(positions), *extra],
            ["--log-level", "ERROR", "process", "--input", str(positions), "--alerts-out",
             str(tmp_path / "alerts.jsonl"), "--metrics-port", "0", *extra]]


@pytest.mark.parametrize("variable", ["TRAJSTREAM_WEIGHTS", "TRAJSTREAM_MODEL_WEIGHTS"])
def test_every_weights_option_reads_the_weights_variable_and_its_alias(
        tmp_path: Path, capsys, monkeypatch, variable: str) -> None:
    """`process` and `demo` read TRAJSTREAM_WEIGHTS, `model evaluate` read only
    TRAJSTREAM_MODEL_WEIGHTS: one environment evaluated one model and served another, with
    no word. Both read both now (the broken file set here stops each run, exit 2)."""
    weights = tmp_path / "lstm.npz"
    _text(weights)
    monkeypatch.setenv(variable, str(weights))
    for argv in _weights_runs(tmp_path):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "not a trajstream weights file" in err and len(err.splitlines()) == 1, err


def test_the_weights_variable_and_its_alias_naming_different_files_are_refused(
        tmp_path: Path, capsys, monkeypatch) -> None:
    other = tmp_path / "other.npz"
    other.write_bytes(SHIPPED_WEIGHTS.read_bytes())
    monkeypatch.setenv("TRAJSTREAM_WEIGHTS", str(SHIPPED_WEIGHTS))
    monkeypatch.setenv("TRAJSTREAM_MODEL_WEIGHTS", str(other))
    for argv in _weights_runs(tmp_path):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert (f"TRAJSTREAM_WEIGHTS={SHIPPED_WEIGHTS} and TRAJSTREAM_MODEL_WEIGHTS={other} "
                f"(its alias) differ: set one of them") in err, err
    # a flag wins over both; a predictor that reads no weights reads neither
    evaluate, process = _weights_runs(tmp_path)
    assert main([*evaluate, "--models", "cv", "--weights", str(other)]) == 0
    assert main([*process, "--predictor", "cv"]) == 0
    monkeypatch.setenv("TRAJSTREAM_MODEL_WEIGHTS", str(SHIPPED_WEIGHTS))  # the same: agreed
    assert main([*evaluate, "--models", "cv"]) == 0


def test_the_shipped_weights_still_load() -> None:
    assert LstmWeights.load(SHIPPED_WEIGHTS).config.units > 0


@pytest.mark.parametrize("lines, reason", [
    ([b'{"vehicle_id":"a","ts":1764081000000,"x":1,"y":2}'], "milliseconds"),
    ([b'{"vehicle_id":"a","ts":1764081000,"lat":33.1,"lon":-84.2}'], "--origin-lat"),
    (['{"vehicle_id":"a","ts":1764081000,"x":1,"y":2}'.encode("utf-16")], "not_json"),
])
def test_an_input_of_which_nothing_is_accepted_exits_nonzero_with_the_reasons(
        tmp_path: Path, capsys, lines: list[bytes], reason: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines * 3) + b"\n")
    alerts = tmp_path / "a.jsonl"
    alerts.write_bytes(b"a previous run's alerts\n")
    argv = ["--log-level", "ERROR", "process", "--input", str(src), "--alerts-out",
            str(alerts), "--dlq-out", str(tmp_path / "dlq.jsonl"), "--predictor", "cv",
            "--metrics-port", "0"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("trajstream: error: none of the") and reason in err, err
    assert len(err.splitlines()) == 1
    # a failed run: its outputs are discarded, an existing file keeps its content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "in.jsonl"]
    assert alerts.read_bytes() == b"a previous run's alerts\n"


def test_an_input_that_cannot_be_opened_leaves_no_output_behind(tmp_path: Path) -> None:
    argv = ["--log-level", "ERROR", "process", "--input", str(tmp_path / "missing.jsonl"),
            "--alerts-out", str(tmp_path / "a.jsonl"), "--dlq-out", str(tmp_path / "d.jsonl"),
            "--predictions-out", str(tmp_path / "p.jsonl"), "--metrics-port", "0"]
    assert main(argv) == 2
    assert list(tmp_path.iterdir()) == []


def test_an_empty_input_is_not_an_error(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"")
    assert main(["process", "--input", str(src), "--alerts-out", str(tmp_path / "a.jsonl"),
                 "--predictor", "cv", "--metrics-port", "0"]) == 0


def test_bootstrap_and_input_together_are_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(crossing_traffic(seed=4)) + b"\n")
    argv = ["process", "--input", str(src), "--alerts-out", str(tmp_path / "a.jsonl"),
            "--predictor", "cv", "--metrics-port", "0"]
    assert main([*argv, "--bootstrap", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not both" in err and len(err.splitlines()) == 1
    # a broker from the environment (compose) yields to an explicit --input
    monkeypatch.setenv("TRAJSTREAM_BOOTSTRAP", "127.0.0.1:9")
    assert main(argv) == 0


def test_one_environment_serves_both_sources(tmp_path: Path, capsys, monkeypatch) -> None:
    """The compose processor's environment (broker, predictions and dead-letter topics) and
    a file run given as flags: before, 'are for Kafka input' (exit 2), though the README
    says one environment serves every command; and a file run's environment with a
    --bootstrap flag was 'not both'."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(crossing_traffic(seed=4)) + b"\n")
    alerts = tmp_path / "a.jsonl"
    for name, value in (("BOOTSTRAP", "127.0.0.1:9"), ("PREDICTIONS_TOPIC", "p"),
                        ("DLQ_TOPIC", "d"), ("UNTIL_END", "1"), ("STAGE", "predict")):
        monkeypatch.setenv(f"TRAJSTREAM_{name}", value)
    argv = ["process", "--predictor", "cv", "--metrics-port", "0"]
    assert main([*argv, "--input", str(src), "--alerts-out", str(alerts)]) == 0
    assert alerts.stat().st_size > 0
    # the other way round: the flag's Kafka source, the file settings of the environment
    # not read (port 0: refused before connecting, by the Kafka source's own check)
    monkeypatch.setenv("TRAJSTREAM_INPUT", str(src))
    monkeypatch.setenv("TRAJSTREAM_ALERTS_OUT", str(tmp_path / "b.jsonl"))
    capsys.readouterr()
    assert main([*argv, "--bootstrap", "127.0.0.1:0"]) == 2
    assert "invalid Kafka bootstrap '127.0.0.1:0'" in capsys.readouterr().err


def test_lat_lon_degrees_in_x_y_are_refused_with_one_line(tmp_path: Path, capsys) -> None:
    """Issue 12, finding 3: degrees in the metre fields put the city in one square metre
    and gave hundreds of critical alerts, none real."""
    import orjson

    rows = [orjson.loads(x) for x in crossing_traffic(seed=4)]
    lat0, lon0 = 33.7756, -84.3963
    lines = []
    for r in rows:
        for j in range(3):  # three vehicles a few metres (1e-5 degrees) apart
            lines.append(orjson.dumps({**r, "vehicle_id": f"{r['vehicle_id']}-{j}",
                                       "x": lat0 + r["x"] * 1e-5 + j * 3e-5,
                                       "y": lon0 + r["y"] * 1e-5}))
    src = tmp_path / "degrees.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    argv = ["--log-level", "ERROR", "process", "--input", str(src), "--alerts-out",
            str(tmp_path / "a.jsonl"), "--predictor", "cv", "--metrics-port", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "look like latitude/longitude degrees" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "a.jsonl").exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _waiting_runs(tmp_path: Path) -> list[list[str]]:
    """Commands that wait for the broker at start-up, on a port nothing listens on."""
    bootstrap = f"127.0.0.1:{_closed_port()}"
    positions = tmp_path / "in.jsonl"
    positions.write_bytes(b"\n".join(crossing_traffic(seed=4)) + b"\n")
    return [["alerts", "--bootstrap", bootstrap],
            ["simulate", "--bootstrap", bootstrap, "--duration", "1"],
            ["replay", str(positions), "--bootstrap", bootstrap]]


@pytest.mark.parametrize("variable", ["TRAJSTREAM_KAFKA_TIMEOUT_S", "TRAJSTREAM_CONNECT_TIMEOUT"])
def test_every_wait_for_the_broker_reads_the_timeout_variable_and_its_alias(
        tmp_path: Path, capsys, monkeypatch, variable: str) -> None:
    """`simulate` and `replay` read TRAJSTREAM_KAFKA_TIMEOUT_S, `alerts` read
    TRAJSTREAM_CONNECT_TIMEOUT for the same wait: one environment gave them different
    waits (the other one's 10 s default) without a word. Each reads both now."""
    monkeypatch.setenv(variable, "0.3")
    for argv in _waiting_runs(tmp_path):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert "cannot reach Kafka" in err and "after 0.3 s" in err, (argv, err)
    monkeypatch.setenv(variable, "0")  # one attempt: valid for every command
    for argv in _waiting_runs(tmp_path):
        assert main(argv) == 1, argv
        assert "after 0 s" in capsys.readouterr().err, argv


def test_the_timeout_variable_and_its_alias_set_apart_are_refused(
        tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("TRAJSTREAM_KAFKA_TIMEOUT_S", "0.3")
    monkeypatch.setenv("TRAJSTREAM_CONNECT_TIMEOUT", "0.5")
    for argv in _waiting_runs(tmp_path):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("TRAJSTREAM_KAFKA_TIMEOUT_S=0.3 and "
                                              "TRAJSTREAM_CONNECT_TIMEOUT=0.5 (its alias) "
                                              "differ: set one of them") in err, (argv, err)
