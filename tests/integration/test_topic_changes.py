"""An operator changing the topics of a deployed processor, on the real broker.

Partitions added to the positions topic (kafka-topics --alter): the changelog must follow,
at a restart and under a running processor, keeping the old partitions' state. A changelog
topic deleted under a running processor comes back through the broker's auto-creation,
not compacted: a restart must say so, not run on it. Records the retention deletes before
the processor read them (a lag longer than retention.ms) must be counted and said.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli import cli_cmd, cli_env, trajstream, wait_for_log
from trajstream.stream.kafka import create_topics, grow_topic, partition_count

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small simulated run cut in two at 10 s of event time: before and after a change."""
    d = tmp_path_factory.mktemp("topics")
    path = d / "positions.jsonl"
    trajstream("simulate", "--vehicles", "30", "--duration", "20", "--seed", "5",
               "--no-pace", "--out", str(path))
    lines = path.read_bytes().splitlines(keepends=True)
    cut = len(lines) // 2
    first, second = d / "first.jsonl", d / "second.jsonl"
    first.write_bytes(b"".join(lines[:cut]))
    second.write_bytes(b"".join(lines[cut:]))
    return first, second


# How soon a processor with its default settings takes a partition added to its input: its
# consumer's metadata refresh (5 s) and a rebalance, on a loaded machine.
GROWN_TAKEN_S = 30.0


def _replay(bootstrap: str, path: Path, topic: str) -> None:
    trajstream("replay", str(path), "--bootstrap", bootstrap, "--topic", topic, "--no-pace")


@contextlib.contextmanager
def _processor(bootstrap: str, positions: str, alerts: str, group: str, client: str,
               log_path: Path, *extra: str) -> Iterator[subprocess.Popen[Any]]:
    """A ``trajstream process`` following ``positions``, logging at INFO into ``log_path``;
    stopped with SIGTERM at the end of the block, where it must exit 0."""
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            cli_cmd("process", "--bootstrap", bootstrap, "--positions-topic", positions,
                    "--alerts-topic", alerts, "--group", group, "--metrics-port", "0",
                    "--kafka-client", client, *extra, log_level="INFO"),
            env=cli_env(), stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_committed(bootstrap: str, topic: str, group: str, proc: subprocess.Popen[Any],
                    timeout_s: float) -> None:
    """Until ``group`` has committed offsets of both partitions of ``topic`` (not their
    end: the live run holds its last ticks back until later records come)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            parts = [TopicPartition(topic, p) for p in range(2)]
            done = [tp.offset for tp in c.committed(parts, timeout=10)]
            ends = [c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
            if min(done) > 0:
                return
            assert proc.poll() is None, f"the processor ended: committed {done} of {ends}"
            assert time.monotonic() < deadline, f"committed {done} of {ends}"
            time.sleep(0.5)
    finally:
        c.close()


def _restored(log: str) -> list[int]:
    return [int(line.split("restored ")[1].split()[0]) for line in log.splitlines()
            if "restored " in line]


def _first_run(kafka_bootstrap: str, new_topic: Callable[[str], str], kafka_client: str,
               first_half: Path) -> tuple[str, str, list[str]]:
    """A one-partition positions topic holding ``first_half``, processed to its end; its
    name, the group and the process command line, to run again."""
    positions, group = new_topic("positions"), new_topic("group")
    create_topics(kafka_bootstrap, [positions], partitions=1)
    _replay(kafka_bootstrap, first_half, positions)
    args = ["process", "--bootstrap", kafka_bootstrap, "--positions-topic", positions,
            "--alerts-topic", new_topic("alerts"), "--group", group, "--metrics-port", "0",
            "--until-end", "--kafka-client", kafka_client]
    trajstream(*args)
    return positions, group, args


def test_a_restart_after_partitions_were_added_grows_the_changelog_and_keeps_the_state(
    kafka_bootstrap: str, new_topic: Callable[[str], str], kafka_client: str,
    halves: tuple[Path, Path]
):
    """Before: the restart refused with exit 2 ('changelog topic ... has 1 partition(s), its
    input topic 2: they must match (use a new --changelog-topic)'), and a new changelog
    topic throws every vehicle's state away."""
    positions, group, args = _first_run(kafka_bootstrap, new_topic, kafka_client, halves[0])
    assert partition_count(kafka_bootstrap, f"{group}-changelog") == 1
    assert grow_topic(kafka_bootstrap, positions, 2) == 2
    _replay(kafka_bootstrap, halves[1], positions)
    err = trajstream(*args, log_level="INFO").stderr
    assert partition_count(kafka_bootstrap, f"{group}-changelog") == 2
    restored = _restored(err)
    assert restored and restored[0] > 0, err[-3000:]  # partition 0's vehicles came back


def test_partitions_added_under_a_running_processor_are_processed_with_their_own_changelog(
    kafka_bootstrap: str, new_topic: Callable[[str], str], kafka_client: str,
    halves: tuple[Path, Path], tmp_path: Path
):
    """Before: once the consumer saw the new partition, the restore of its state raised
    'input partition(s) [1] have no changelog partition ...' and the processor exited 2.

    And with the clients' defaults the consumer saw it only at its next metadata refresh,
    every 5 minutes: meanwhile a producer that knew it (any started after the growth) wrote
    positions there that nobody read (measured with confluent-kafka: the partition taken
    287 s after it was added, 53,172 positions behind, their alerts as late). So this runs
    with the processor's own settings: the new partition must be taken within seconds."""
    positions, group = new_topic("positions"), new_topic("group")
    create_topics(kafka_bootstrap, [positions], partitions=1)
    _replay(kafka_bootstrap, halves[0], positions)
    log_path = tmp_path / "process.log"
    with _processor(kafka_bootstrap, positions, new_topic("alerts"), group, kafka_client,
                    log_path) as proc:
        wait_for_log(log_path, "first record", proc, 120)
        assert grow_topic(kafka_bootstrap, positions, 2) == 2
        grown = time.monotonic()
        _replay(kafka_bootstrap, halves[1], positions)  # a new producer: writes to both
        wait_for_log(log_path, "partition(s) [1] of", proc,
                     max(GROWN_TAKEN_S - (time.monotonic() - grown), 1.0))
        _wait_committed(kafka_bootstrap, positions, group, proc, 60)
    assert partition_count(kafka_bootstrap, f"{group}-changelog") == 2
    assert "error" not in log_path.read_text().lower(), log_path.read_text()[-3000:]


def test_a_processor_reading_from_latest_says_a_new_partitions_earlier_records_are_skipped(
    kafka_bootstrap: str, new_topic: Callable[[str], str], kafka_client: str, tmp_path: Path
):
    """A partition added under a running processor has no committed offset, and with
    --from-latest the client starts it at its end: what a producer wrote there before the
    processor took it was skipped without a word."""
    positions, group = new_topic("positions"), new_topic("group")
    create_topics(kafka_bootstrap, [positions], partitions=1)
    log_path = tmp_path / "process.log"
    with _processor(kafka_bootstrap, positions, new_topic("alerts"), group, kafka_client,
                    log_path, "--from-latest") as proc:
        wait_for_log(log_path, "partitions [0] assigned", proc, 120)
        assert grow_topic(kafka_bootstrap, positions, 2) == 2
        wait_for_log(log_path, f"--from-latest: partition(s) [1] of {positions} are read from "
                     f"their end, so the positions written to them before this group took "
                     f"them are skipped", proc, GROWN_TAKEN_S)


def test_a_changelog_topic_that_is_not_compacted_is_refused_at_start_up(
    kafka_bootstrap: str, new_topic: Callable[[str], str], kafka_client: str
):
    """Before: deleted under a running processor, the changelog was auto-created by its
    producer with the broker's defaults (cleanup.policy=delete, segment.ms 7 days), and
    every later run used it without a word: state deleted with age, restores reading a
    week of versions."""
    positions, group = new_topic("positions"), new_topic("group")
    create_topics(kafka_bootstrap, [positions, f"{group}-changelog"], partitions=1)
    proc = subprocess.run(
        cli_cmd("process", "--bootstrap", kafka_bootstrap, "--positions-topic", positions,
                "--alerts-topic", new_topic("alerts"), "--group", group, "--metrics-port", "0",
                "--until-end", "--kafka-client", kafka_client),
        env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "is not compacted (cleanup.policy=delete" in last, last


def test_records_deleted_by_retention_before_they_were_read_are_counted_and_said(
    kafka_bootstrap: str, new_topic: Callable[[str], str], kafka_client: str,
    halves: tuple[Path, Path]
):
    """Before: the consumer went on from the earliest record kept; kafka-python said
    nothing, librdkafka a line of its own ('offset reset ... to offset BEGINNING'), and no
    metric counted them (found with retention.ms=20000 and a processor down 100 s: 12,165
    records gone, no sign). Deleting records stands in for retention (same log start
    offset), without waiting for the broker's retention check."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    positions, group, args = _first_run(kafka_bootstrap, new_topic, kafka_client, halves[0])
    committed = sum(1 for _ in halves[0].open("rb"))
    _replay(kafka_bootstrap, halves[1], positions)
    gone = 500
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for fut in admin.delete_records([TopicPartition(positions, 0, committed + gone)]).values():
        fut.result(timeout=30)
    err = trajstream(*args, log_level="INFO").stderr
    assert f"{gone} record(s) of {positions}[0] were deleted by its retention" in err, \
        err[-3000:]
