"""The docker compose deployment, proven without a Docker engine.

- `docker-compose config -q` validates docker-compose.yml; its resolved output is what the
  structural checks read (start-up order, listeners, health checks, Grafana security).
- `promtool check config|rules` validate the Prometheus files; `promtool test rules` proves
  that every alert fires on a bad series and stays quiet on healthy ones.
- Every PromQL expression of the Grafana dashboard parses, and every panel uses the
  provisioned datasource uid.
- The live test runs the stack natively: a broker configured from the compose `kafka`
  environment by the image's own entrypoint code (kafka.docker.KafkaDockerWrapper), the
  `topics` script, and the exact compose commands and environment of the processor and the
  simulator (only addresses and ports rewritten), scraped by a real Prometheus with the
  project's configuration (only its targets rewritten). Every dashboard query must return
  data and no alert rule may fire on that healthy traffic.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"
PROM_DIR = DEPLOY / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
PROM_RULES = PROM_DIR / "rules.yml"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "trajstream.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "trajstream.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

TEST_PASSWORD = "test-only-password"
# Grafana's built-in interval variables, as Grafana would expand them for this stack
# (scrape interval 5 s = the datasource's timeInterval; $__rate_interval = 4 x 5 s).
GRAFANA_VARS = {"$__rate_interval": "20s", "$__interval": "5s", "$__range": "15m"}
METRIC_RE = re.compile(r"\btrajstream_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` not installed (apt-get install {package})")
    return path


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without trajstream/compose settings, so defaults apply."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRAJSTREAM_", "COMPOSE_", "GRAFANA_", "KAFKA_"))
        and k not in {"POSITIONS_PARTITIONS", "ALERTS_PARTITIONS", "PROMETHEUS_PORT"}
    }
    env.update(extra)
    return env


def _compose(*args: str, password: str | None = TEST_PASSWORD) -> subprocess.CompletedProcess[str]:
    exe = _tool("docker-compose", "docker-compose")
    env = _clean_env(**({"GRAFANA_ADMIN_PASSWORD": password} if password is not None else {}))
    # An empty env file: a developer's .env must not change what the tests see.
    with tempfile.NamedTemporaryFile("w", suffix=".env") as env_file:
        return subprocess.run(
            [exe, "--env-file", env_file.name, "-f", str(COMPOSE_FILE), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=120,
        )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as compose resolves it (anchors merged, variables interpolated)."""
    done = _compose("config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _ports(service: dict[str, Any]) -> dict[str, str]:
    """{published host port: container port}, from compose's short or long syntax."""
    out = {}
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out[str(p["published"])] = str(p["target"])
        else:
            *_, published, target = str(p).split("/")[0].split(":")
            out[published] = target
    return out


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """{container path: host path or volume name}, from compose's short or long syntax."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = str(v.get("source"))
        else:
            source, target, *_ = str(v).split(":")
            out[target] = source
    return out


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in dash["panels"]:
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def _dashboard_queries() -> list[tuple[str, str]]:
    """(panel title / refId, PromQL with Grafana's interval variables expanded)."""
    queries = []
    for panel in _panels(_dashboard()):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            queries.append((f"{panel['title']} / {target['refId']}", expr))
    return queries


def _alert_rules() -> list[dict[str, Any]]:
    return [r for g in _load_yaml(PROM_RULES)["groups"] for r in g["rules"] if "alert" in r]


# --------------------------------------------------------------------------- compose


def test_compose_file_is_valid() -> None:
    done = _compose("config", "-q")
    assert done.returncode == 0, done.stderr


def test_compose_has_no_default_grafana_password() -> None:
    done = _compose("config", "-q", password=None)
    assert done.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in done.stderr


def test_grafana_admin_password_comes_from_the_environment(compose: dict[str, Any]) -> None:
    env = _env(compose["services"]["grafana"])
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == TEST_PASSWORD
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED", "false").lower() == "false" or env.get(
        "GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer"
    ) not in {"Admin", "Editor"}
    assert env.get("GF_USERS_ALLOW_SIGN_UP", "false").lower() == "false"


def test_kafka_is_single_node_kraft_with_static_voters_and_two_client_listeners(
    compose: dict[str, Any],
) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    listeners = dict(_listener(x) for x in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(_listener(x) for x in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    # Static voter set: this node, reachable by its service name on the controller listener.
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:{listeners[controller][1]}"
    assert controller not in advertised
    assert set(listeners) == set(protocols)
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # One advertised listener for the containers (kafka:PORT), one for the host
    # (localhost:PUBLISHED), each backed by a listener on the same container port.
    by_host = {host: (name, port) for name, (host, port) in advertised.items()}
    assert "kafka" in by_host and "localhost" in by_host
    internal_name, internal_port = by_host["kafka"]
    host_name, host_port = by_host["localhost"]
    assert listeners[internal_name][1] == internal_port
    assert _ports(kafka).get(host_port) == listeners[host_name][1]
    for name in ("processor", "simulator"):
        bootstrap = _env(compose["services"][name])["TRAJSTREAM_BOOTSTRAP"]
        assert bootstrap == f"kafka:{internal_port}", name
    assert "healthcheck" in kafka


def _listener(spec: str) -> tuple[str, tuple[str, str]]:
    name, rest = spec.split("://")
    host, port = rest.rsplit(":", 1)
    return name, (host, port)


def test_compose_starts_in_order_and_restarts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "topics": {"kafka": "service_healthy"},
        "processor": {"topics": "service_completed_successfully"},
        "simulator": {"processor": "service_healthy"},
        "grafana": {"prometheus": "service_healthy"},
    }
    for name, deps in expected.items():
        got = {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}
        assert got == deps, name
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
        if name != "topics":
            assert svc.get("restart") in {"unless-stopped", "always", "on-failure"}, name
    assert services["topics"].get("restart", "no") == "no"


def _command(name: str) -> click.Command:
    from stream.cli import cli

    cmd = cli.get_command(click.Context(cli), name)
    assert cmd is not None, f"trajstream has no `{name}` command"
    return cmd


def _envvars(cmd: click.Command) -> dict[str, click.Parameter]:
    from stream.cli import cli

    out = {}
    for p in [*cmd.params, *cli.params]:
        envvars = p.envvar if isinstance(p.envvar, list | tuple) else [p.envvar]
        out.update({e: p for e in envvars if e})
    return out


@pytest.mark.parametrize(
    ("service", "command", "required"),
    [
        (
            "processor",
            "process",
            {
                "TRAJSTREAM_BOOTSTRAP", "TRAJSTREAM_POSITIONS_TOPIC", "TRAJSTREAM_ALERTS_TOPIC",
                "TRAJSTREAM_PREDICTIONS_TOPIC", "TRAJSTREAM_DLQ_TOPIC", "TRAJSTREAM_GROUP",
                "TRAJSTREAM_METRICS_PORT", "TRAJSTREAM_PREDICTOR", "TRAJSTREAM_KAFKA_CLIENT",
            },
        ),
        ("simulator", "simulate", {"TRAJSTREAM_BOOTSTRAP", "TRAJSTREAM_POSITIONS_TOPIC"}),
    ],
)  # fmt: skip
def test_app_services_run_the_cli_configured_by_its_envvars(
    compose: dict[str, Any], service: str, command: str, required: set[str]
) -> None:
    """Each TRAJSTREAM_* variable is a real envvar of the command, with a valid value."""
    svc = compose["services"][service]
    assert svc["command"] == [command]
    env = _env(svc)
    assert required <= set(env), required - set(env)
    params = _envvars(_command(command))
    ctx = click.Context(_command(command))
    for var, value in env.items():
        assert var in params, f"{service}: {var} is not an envvar of `trajstream {command}`"
        param = params[var]
        param.type_cast_value(ctx, value)  # raises click.BadParameter when invalid


def test_topics_service_creates_every_topic_the_processor_uses(compose: dict[str, Any]) -> None:
    specs = _env(compose["services"]["topics"])["TOPICS"].split()
    topics = dict(spec.rsplit(":", 1) for spec in specs)
    env = _env(compose["services"]["processor"])
    for var in ("TRAJSTREAM_POSITIONS_TOPIC", "TRAJSTREAM_ALERTS_TOPIC",
                "TRAJSTREAM_PREDICTIONS_TOPIC", "TRAJSTREAM_DLQ_TOPIC"):  # fmt: skip
        assert env[var] in topics, var
        assert int(topics[env[var]]) >= 1
    assert int(topics[env["TRAJSTREAM_POSITIONS_TOPIC"]]) > 1, "positions need partitions"


def test_prometheus_scrapes_the_processor_service(compose: dict[str, Any]) -> None:
    processor = compose["services"]["processor"]
    port = _env(processor)["TRAJSTREAM_METRICS_PORT"]
    config = _load_yaml(PROM_CONFIG)
    targets = [t for job in config["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]]  # fmt: skip
    assert f"processor:{port}" in targets
    prom = compose["services"]["prometheus"]
    mounts = _mounts(prom)
    assert Path(mounts["/etc/prometheus"]).resolve() == PROM_DIR
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert "healthcheck" in prom and "healthcheck" in processor


def test_grafana_provisioning_matches_the_stack(compose: dict[str, Any]) -> None:
    ds = _load_yaml(DATASOURCES)["datasources"]
    assert len(ds) == 1 and ds[0]["type"] == "prometheus" and ds[0]["uid"]
    assert ds[0]["url"] == "http://prometheus:9090"
    provider = _load_yaml(DASHBOARD_PROVIDERS)["providers"][0]
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    assert Path(mounts[provider["options"]["path"]]).resolve() == DASHBOARD.parent
    assert Path(mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA_DIR / "provisioning"
    home = _env(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


# --------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[str]:
    """Instructions with their continuation lines joined, comments dropped."""
    out: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        pending += " " + stripped.rstrip("\\").strip() if pending else stripped.rstrip("\\")
        if not stripped.endswith("\\"):
            out.append(pending.strip())
            pending = ""
    return out


def test_dockerfile_is_slim_non_root_and_cache_friendly() -> None:
    instr = _dockerfile_instructions()
    assert any(i.startswith("FROM python:") and "slim" in i for i in instr)
    users = [i.split()[1] for i in instr if i.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    # Dependencies install from pyproject.toml alone, before any source is copied.
    first_copy = next(i for i, x in enumerate(instr) if x.startswith("COPY "))
    deps = next(i for i, x in enumerate(instr) if x.startswith("RUN") and "requirements" in x)
    source = next(i for i, x in enumerate(instr) if x.startswith("COPY ") and "stream" in x)
    assert instr[first_copy].split()[1] == "pyproject.toml"
    assert first_copy < deps < source
    install = next(x for x in instr if x.startswith("RUN pip install --no-deps"))
    assert "weights" in install, "the build checks that the model ships inside"
    assert "tensorflow-cpu" in (REPO / "pyproject.toml").read_text()


def test_dockerignore_keeps_what_the_image_needs() -> None:
    patterns = [
        ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]  # fmt: skip
    needed = ["pyproject.toml", "README.md", "stream", "model", "simulator", "model/weights"]
    needed += [str(p.relative_to(REPO)) for p in (REPO / "model" / "weights").glob("*")]
    for path in needed:
        for pat in patterns:
            bare = pat.removeprefix("**/").rstrip("/")
            assert not Path(path).match(bare) and path != bare, f"{pat} excludes {path}"
    for bulky in (".git", ".venv", "kafka", "tests"):
        assert bulky in patterns


# --------------------------------------------------------------------------- Prometheus


def test_promtool_check_config_and_rules() -> None:
    promtool = _tool("promtool", "prometheus")
    for args in (["check", "config", str(PROM_CONFIG)], ["check", "rules", str(PROM_RULES)]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


P = 'job="trajstream-processor", instance="processor:9100"'


def _hist(name: str, labels: str, buckets: dict[str, str]) -> list[dict[str, str]]:
    return [
        {"series": f'{name}_bucket{{{labels}, le="{le}"}}', "values": v}
        for le, v in buckets.items()
    ]


def _err(model: str, horizon: str, sum_v: str, count_v: str) -> list[dict[str, str]]:
    labels = f'{P}, model="{model}", horizon="{horizon}"'
    return [
        {"series": f"trajstream_prediction_error_meters_sum{{{labels}}}", "values": sum_v},
        {"series": f"trajstream_prediction_error_meters_count{{{labels}}}", "values": count_v},
    ]


ALERT_LABELS = {"job": "trajstream-processor", "instance": "processor:9100"}
# (name, interval, input series, eval time, {alertname: expected labels of each alert})
# A scenario's alerts not listed must not fire at eval time.
SCENARIOS: list[tuple[str, str, list[dict[str, str]], str, dict[str, list[dict[str, str]]]]] = [
    (
        "healthy",
        "1m",
        [
            {"series": f"up{{{P}}}", "values": "1x40"},
            {"series": f"trajstream_consumer_lag_records{{{P}}}", "values": "800x40"},
            *_hist("trajstream_batch_seconds", P,
                   {"0.05": "0+95x40", "0.25": "0+100x40", "1": "0+100x40", "+Inf": "0+100x40"}),
            {"series": f"trajstream_event_time_lag_seconds{{{P}}}", "values": "0.4x40"},
            {"series": f"trajstream_positions_consumed_total{{{P}}}", "values": "0+1000x40"},
            {"series": f'trajstream_positions_rejected_total{{{P}, reason="not_json"}}',
             "values": "0+2x40"},
            *_err("lstm", "4", "0+150x40", "0+100x40"),
            *_err("cv", "4", "0+200x40", "0+100x40"),
        ],
        "40m",
        {},
    ),
    ("processor down", "1m", [{"series": f"up{{{P}}}", "values": "1x5 0x10"}], "8m",
     {"TrajstreamProcessorDown": [{**ALERT_LABELS, "severity": "critical"}]}),
    ("processor never scraped", "1m", [{"series": 'up{job="prometheus"}', "values": "1x10"}], "3m",
     {"TrajstreamProcessorDown": [{"job": "trajstream-processor", "severity": "critical"}]}),
    ("lag growing", "1m",
     [{"series": f"trajstream_consumer_lag_records{{{P}}}", "values": "0+200x40"}], "25m",
     {"TrajstreamConsumerLagGrowing": [{**ALERT_LABELS, "severity": "warning"}]}),
    ("lag high but shrinking", "1m",
     [{"series": f"trajstream_consumer_lag_records{{{P}}}", "values": "20000-200x40"}], "25m", {}),
    ("slow batches", "1m",
     _hist("trajstream_batch_seconds", P,
           {"0.25": "0+1x30", "0.5": "0+1x30", "1": "0+100x30", "+Inf": "0+100x30"}), "12m",
     {"TrajstreamBatchLatencyHigh": [
         {**ALERT_LABELS, "severity": "warning", "objective": "batch_p99_0.5s"}]}),
    ("event time far behind", "1m",
     [{"series": f"trajstream_event_time_lag_seconds{{{P}}}", "values": "30x20"}], "10m",
     {"TrajstreamEventTimeLagHigh": [
         {**ALERT_LABELS, "severity": "warning", "objective": "event_time_lag_5s"}]}),
    ("many rejections", "1m",
     [{"series": f"trajstream_positions_consumed_total{{{P}}}", "values": "0+1000x20"},
      {"series": f'trajstream_positions_rejected_total{{{P}, reason="not_json"}}',
       "values": "0+100x20"},
      {"series": f'trajstream_positions_rejected_total{{{P}, reason="wrong_type"}}',
       "values": "0x20"}], "12m",
     {"TrajstreamRejectionRateHigh": [{**ALERT_LABELS, "severity": "warning"}]}),
    ("idle input", "1m",
     [{"series": f"trajstream_positions_consumed_total{{{P}}}", "values": "0x20"},
      {"series": f'trajstream_positions_rejected_total{{{P}, reason="not_json"}}',
       "values": "0x20"}], "12m", {}),
    ("lstm worse than constant velocity", "1m",
     [*_err("lstm", "4", "0+300x60", "0+100x60"), *_err("cv", "4", "0+200x60", "0+100x60")],
     "30m",
     {"TrajstreamPredictionWorseThanBaseline": [
         {**ALERT_LABELS, "severity": "warning", "horizon": "4"}]}),
    ("error drifts up after a day", "10m",
     _err("lstm", "1", "0+100x200 20300+300x29", "0+100x229"), "2290m",
     {"TrajstreamPredictionErrorDrifting": [
         {**ALERT_LABELS, "severity": "warning", "model": "lstm", "horizon": "1"}]}),
    ("error steady for a day", "10m", _err("lstm", "1", "0+100x229", "0+100x229"), "2290m", {}),
]  # fmt: skip


def test_alert_rules_fire_on_bad_series_and_stay_quiet_on_healthy_ones(tmp_path: Path) -> None:
    """promtool unit tests generated from SCENARIOS over rules.yml (annotations stripped so
    that the expectations are about expressions, `for` durations and labels)."""
    promtool = _tool("promtool", "prometheus")
    rules = _load_yaml(PROM_RULES)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    names = [r["alert"] for r in _alert_rules()]
    tests = []
    for _title, interval, series, eval_time, firing in SCENARIOS:
        assert set(firing) <= set(names)
        if not any(x["series"].startswith("up{") for x in series):  # a scraped processor
            series = [*series, {"series": f"up{{{P}}}", "values": "1x400"}]
        tests.append({
            "interval": interval,
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": eval_time, "alertname": name,
                 "exp_alerts": [{"exp_labels": lab} for lab in firing.get(name, [])]}
                for name in names
            ],
        })  # fmt: skip
    covered = {name for *_, firing in SCENARIOS for name in firing}
    assert covered == set(names), f"alerts without a firing scenario: {set(names) - covered}"
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = subprocess.run(
        [promtool, "test", "rules", "rules_test.yml"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- Grafana


def test_every_panel_uses_the_provisioned_datasource() -> None:
    uid = _load_yaml(DATASOURCES)["datasources"][0]["uid"]
    dash = _dashboard()
    assert dash["uid"] and dash["schemaVersion"] >= 39
    assert not dash.get("templating", {}).get("list"), "queries assume no template variables"
    panels = _panels(dash)
    assert panels
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
    ids = [p["id"] for p in dash["panels"]] + [p["id"] for p in panels if p not in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule), Grafana variables expanded."""
    promtool = _tool("promtool", "prometheus")
    queries = _dashboard_queries()
    leftover = [q for _, q in queries if "$" in q]
    assert not leftover, f"unexpanded Grafana variables: {leftover}"
    rules = [{"record": f"dashboard:query_{i}", "expr": q} for i, (_, q) in enumerate(queries)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    text = "\n".join(q for _, q in _dashboard_queries())
    wanted = [
        r"rate\(trajstream_positions_consumed_total",
        r"histogram_quantile\(0\.5, sum by \(le\) \(rate\(trajstream_batch_seconds_bucket",
        r"histogram_quantile\(0\.99, sum by \(le\) \(rate\(trajstream_batch_seconds_bucket",
        r"trajstream_event_time_lag_seconds",
        r"trajstream_consumer_lag_records",
        r"trajstream_active_vehicles",
        r"sum by \(severity\) \(rate\(trajstream_alerts_total",
        r"sum by \(model, horizon\) \(rate\(trajstream_prediction_error_meters_sum.*"
        r"/ sum by \(model, horizon\) \(rate\(trajstream_prediction_error_meters_count",
        r"sum by \(reason\) \(rate\(trajstream_positions_rejected_total",
    ]
    for pattern in wanted:
        assert re.search(pattern, text), pattern


def test_dashboard_and_rules_use_only_metrics_the_processor_exports() -> None:
    from prometheus_client import CollectorRegistry

    from stream.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    metrics.set_build_info("lstm", "confluent")
    exported = set()
    for family in metrics.registry.collect():
        exported.update(s.name for s in family.samples)
    # Labelled histograms only export once observed.
    exported.update(f"trajstream_prediction_error_meters{s}" for s in HISTOGRAM_SUFFIXES)
    used = set(METRIC_RE.findall("\n".join(q for _, q in _dashboard_queries())))
    used |= set(METRIC_RE.findall("\n".join(r["expr"] for r in _alert_rules())))
    assert used and used <= exported, used - exported
