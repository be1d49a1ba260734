"""Soak: a simulated run with ~10% hostile records of every kind, through the real broker.

Issue 12's acceptance: no crash, the valid traffic's alerts unchanged against the clean run,
and every hostile record counted by its reason (the dead-letter topic holds exactly the
rejected and timing-dropped ones). The processor runs with the product defaults (LSTM,
confluent-kafka, no options but the topics). The mix is trajstream/simulator/hostile.py;
bench/bench_soak.py runs it longer, on SUMO traffic too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.integration.cli import read_topic, trajstream
from trajstream.simulator.hostile import KINEMATIC, mix, summary_counts
from trajstream.stream.kafka import create_topics, make_producer

pytestmark = pytest.mark.slow

SIM = ["--vehicles", "60", "--duration", "30", "--seed", "11", "--reckless", "0.3"]


def _counts(stderr: str) -> dict[str, int]:
    counts = summary_counts(stderr)
    assert counts is not None, stderr[-2000:]
    return counts


def test_hostile_records_are_counted_and_change_no_valid_alert(
        kafka_bootstrap: str, new_topic: Callable[[str], str], tmp_path: Path) -> None:
    clean = tmp_path / "clean.jsonl"
    trajstream("simulate", *SIM, "--no-pace", "--out", str(clean))
    ref_alerts, ref_dlq = tmp_path / "alerts.jsonl", tmp_path / "dlq.jsonl"
    ref = _counts(trajstream("process", "--input", str(clean), "--alerts-out", str(ref_alerts),
                             "--dlq-out", str(ref_dlq), "--metrics-port", "0",
                             log_level="INFO").stderr)
    assert ref["speed"] == ref["heading"] == ref["jump"] == ref["dense"] == 0
    ref_letters = Counter(orjson.loads(x)["reason"] for x in ref_dlq.read_bytes().splitlines())

    feed = mix(clean.read_bytes().splitlines())
    assert 0.09 * feed.valid <= feed.hostile <= 0.12 * feed.valid
    positions, alerts, dlq = new_topic("positions"), new_topic("alerts"), new_topic("dlq")
    create_topics(kafka_bootstrap, [positions, alerts, dlq], partitions=1)
    producer = make_producer(kafka_bootstrap)
    for key, value in feed.records:
        producer.send(positions, value, key)
    producer.flush()
    producer.close()
    got = _counts(trajstream("process", "--bootstrap", kafka_bootstrap, "--positions-topic",
                             positions, "--alerts-topic", alerts, "--dlq-topic", dlq,
                             "--group", new_topic("group"), "--until-end", "--metrics-port",
                             "0", log_level="INFO").stderr)

    # the valid traffic's alerts, byte for byte, and none about a hostile vehicle
    assert [r.value for r in read_topic(kafka_bootstrap, alerts)] == \
        ref_alerts.read_bytes().splitlines()

    # every dead letter accounted for: the clean run's own (the simulator's late messages)
    # plus each injected one, by reason
    letters = Counter(orjson.loads(r.value)["reason"]
                      for r in read_topic(kafka_bootstrap, dlq))
    want = ref_letters + feed.dead_letters
    ahead = want.pop("ahead")
    assert ahead - 1 <= letters.pop("ahead", 0) <= ahead
    assert letters == want
    assert got["rejected"] == sum(n for r, n in feed.dead_letters.items()
                                  if r not in ("late", "future", "ahead"))
    assert (got["late"], got["future"]) == (ref["late"] + want["late"] - ref_letters["late"],
                                            want["future"])
    # counted only: the flooding sender's second fixes; duplicates as in the clean run
    assert got["dense"] == feed.dense and got["stale"] == ref["stale"]
    # used, but not as reported: km/h, speed 0 and degrees-as-x/y vehicles (speed), the
    # compass heading, the frame switches (each one)
    assert set(feed.corrected) == {reason for _, reason in KINEMATIC.values()}
    for reason, (most, least) in feed.corrected.items():
        assert least <= got[reason] <= most, (reason, got, feed.corrected)
    print(f"\nsoak: {feed.valid} valid + {feed.hostile} hostile records; dead letters "
          f"{dict(sorted((ref_letters + feed.dead_letters).items()))}; {got}")
