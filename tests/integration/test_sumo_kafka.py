"""`trajstream simulate --engine sumo` on the real broker, consumed by `trajstream process`;
and the SUMO options' errors, as a user meets them."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.integration.cli import cli_cmd, cli_env, read_topic, trajstream
from trajstream.simulator.sumo import CONFLICT_KINDS
from trajstream.stream.groundtruth import match_collisions
from trajstream.stream.kafka import create_topics

pytestmark = pytest.mark.slow

SUMO_RUN = ["simulate", "--engine", "sumo", "--vehicles", "200", "--duration", "60",
            "--seed", "3", "--reckless", "0.3", "--sumo-warmup", "30", "--no-pace"]


def test_a_sumo_run_goes_through_kafka_into_the_processor(
    kafka_bootstrap: str, new_topic: Callable[[str], str], tmp_path: Path
) -> None:
    positions, alerts = new_topic("positions"), new_topic("alerts")
    create_topics(kafka_bootstrap, [positions], partitions=3)
    truth = tmp_path / "truth.jsonl"
    trajstream(*SUMO_RUN, "--bootstrap", kafka_bootstrap, "--topic", positions,
               "--truth", str(truth))
    recorded = tmp_path / "positions.jsonl"  # the same run to a file: the same records
    trajstream(*SUMO_RUN, "--out", str(recorded))
    expected = recorded.read_bytes().splitlines()
    got = read_topic(kafka_bootstrap, positions)
    assert Counter(r.value for r in got) == Counter(expected)
    assert all(r.key == orjson.loads(r.value)["vehicle_id"].encode() for r in got)

    proc = trajstream("process", "--bootstrap", kafka_bootstrap, "--positions-topic",
                      positions, "--alerts-topic", alerts, "--group", new_topic("group"),
                      "--until-end", "--metrics-port", "0", log_level="INFO")
    done = re.search(r"done: (\d+) records .* (\d+) rejected", proc.stderr)
    assert done, proc.stderr[-2000:]
    assert int(done.group(1)) == len(expected), "the processor consumed every record"
    assert int(done.group(2)) == 0, "and accepted them all"

    events = [orjson.loads(x) for x in truth.read_bytes().splitlines()]
    collisions = [e for e in events if e["type"] == "collision"]
    assert collisions, "reckless SUMO drivers crash"
    assert {e["kind"] for e in collisions} <= set(CONFLICT_KINDS)
    published = {r.key.decode() for r in got}
    assert all(e["vehicle_a"] in published and e["vehicle_b"] in published for e in events)
    got_alerts = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, alerts)]
    assert got_alerts and all(a["schema"] == "trajstream.alert/v1" for a in got_alerts)
    report = match_collisions(got_alerts, collisions)
    print(f"\n[sumo e2e] {len(expected)} positions, {len(collisions)} SUMO collisions "
          f"({dict(Counter(e['kind'] for e in collisions))}), {len(got_alerts)} alerts; "
          f"{report.describe()}")


@pytest.mark.parametrize(("args", "says"), [
    (["simulate", "--net-kind", "spider", "--out", "-"], "--net-kind needs --engine sumo"),
    (["simulate", "--engine", "sumo", "--grid", "4", "--out", "-"], "--grid is for the"),
    (["simulate", "--engine", "sumo", "--net-kind", "ring", "--out", "-"], "--net-kind"),
    (["simulate", "--engine", "sumo", "--net", "/nonexistent.net.xml", "--out", "-"],
     "does not exist"),
    (["simulate", "--engine", "sumo", "--net", "{net}", "--osm", "{net}", "--out", "-"],
     "not both"),
    (["simulate", "--engine", "sumo", "--net", "{bad}", "--duration", "1", "--out", "-"],
     "error"),
])
def test_sumo_option_errors_are_one_clear_line(args: list[str], says: str,
                                               tmp_path: Path) -> None:
    net = tmp_path / "x.net.xml"
    net.write_text("<net/>")
    bad = tmp_path / "bad.net.xml"
    bad.write_text("this is not a network")
    cmd = cli_cmd(*[a.replace("{net}", str(net)).replace("{bad}", str(bad)) for a in args])
    res = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trajstream: error:"), res.stderr
    assert says in lines[0], res.stderr
    assert res.stdout == ""
