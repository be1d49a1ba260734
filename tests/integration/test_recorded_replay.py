"""Recorded traffic through the real broker: `data import` -> `replay` -> Kafka -> `process`.

The imported files' records reach the topic byte for byte, keyed by vehicle id, with each
vehicle's length and width; the processor takes every one of them (no dead letters) and
predicts every vehicle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.integration.cli import read_topic, trajstream

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "recorded"


@pytest.mark.parametrize(
    ("fmt", "sample"),
    [("commonroad", "ZAM_Sample-1_1_T-1.xml"), ("ngsim", "ngsim-i80-sample.csv")],
)
def test_imported_file_replays_to_kafka_and_is_processed(
    kafka_bootstrap: str, new_topic: Callable[[str], str], tmp_path: Path, fmt: str,
    sample: str,
) -> None:
    imported = tmp_path / "imported.jsonl"
    trajstream("data", "import", "--format", fmt, str(SAMPLES / sample), "--out", str(imported))
    lines = imported.read_bytes().splitlines()
    records = [orjson.loads(line) for line in lines]
    vehicles = {r["vehicle_id"] for r in records}
    assert len(vehicles) >= 3 and all("length" in r and "width" in r for r in records)

    positions = new_topic("positions")
    res = trajstream("replay", str(imported), "--bootstrap", kafka_bootstrap, "--topic",
                     positions, "--no-pace")
    assert f"published {len(lines)} messages" in res.stderr
    got = read_topic(kafka_bootstrap, positions)
    assert [r.value for r in got] == lines, "one partition: the file's bytes, in its order"
    assert [r.key for r in got] == [r["vehicle_id"].encode() for r in records]

    predictions, dead = new_topic("predictions"), new_topic("dlq")
    trajstream("process", "--bootstrap", kafka_bootstrap, "--positions-topic", positions,
               "--alerts-topic", new_topic("alerts"), "--predictions-topic", predictions,
               "--dlq-topic", dead, "--group", new_topic("group"), "--until-end",
               "--metrics-port", "0")
    assert read_topic(kafka_bootstrap, dead) == [], "no imported record is rejected"
    predicted = {orjson.loads(r.value)["vehicle_id"] for r in read_topic(kafka_bootstrap,
                                                                          predictions)}
    assert predicted == vehicles
