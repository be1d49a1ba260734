"""stream.metrics: the contract's names exist, labels are bounded, registries are separate."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trajstream.stream.codec import REASONS
from trajstream.stream.metrics import LABEL_NAMES, Metrics, serve

# attribute -> (exported family name, type, label names), straight from STREAM_CONTRACTS.md
CONTRACT = {
    "positions_consumed": ("trajstream_positions_consumed", "counter", ()),
    "positions_rejected": ("trajstream_positions_rejected", "counter", ("reason",)),
    "positions_dropped": ("trajstream_positions_dropped", "counter", ("reason",)),
    "positions_corrected": ("trajstream_positions_corrected", "counter", ("reason",)),
    "batch_size": ("trajstream_batch_size_records", "histogram", ()),
    "inference_seconds": ("trajstream_inference_seconds", "histogram", ()),
    "batch_seconds": ("trajstream_batch_seconds", "histogram", ()),
    "processing_seconds": ("trajstream_processing_seconds", "histogram", ()),
    "event_time_lag": ("trajstream_event_time_lag_seconds", "gauge", ()),
    "active_vehicles": ("trajstream_active_vehicles", "gauge", ()),
    "alerts": ("trajstream_alerts", "counter", ("severity",)),
    "consumer_lag": ("trajstream_consumer_lag_records", "gauge", ()),
    "assigned_partitions": ("trajstream_assigned_partitions", "gauge", ()),
    "prediction_error": ("trajstream_prediction_error_meters", "histogram", ("model", "horizon")),
    "risk_seconds": ("trajstream_risk_seconds", "histogram", ()),
    "commit_seconds": ("trajstream_commit_seconds", "histogram", ()),
    "kafka_errors": ("trajstream_kafka_errors", "counter", ("kind",)),
    "info": ("trajstream_build", "info", ()),
}


def families(m: Metrics) -> dict:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(m.registry).decode())}


def sample_names(m: Metrics) -> set[str]:
    return {s.name for f in families(m).values() for s in f.samples}


def test_contract_names_types_and_labels() -> None:
    m = Metrics()
    fams = families(m)
    for attr, (name, kind, labels) in CONTRACT.items():
        metric = getattr(m, attr)
        assert metric._name == name, attr
        assert metric._type == kind, attr
        assert tuple(metric._labelnames) == labels, attr
        exported = name + "_info" if kind == "info" else name  # the text format's family
        assert exported in fams, name


def test_exported_sample_names() -> None:
    m = Metrics()
    m.positions_consumed.inc(5)
    m.set_build_info(predictor="cv", kafka_client="confluent", version="1.2.3")
    m.batch_size.observe(100)
    names = sample_names(m)
    for expected in (
        "trajstream_positions_consumed_total",
        "trajstream_positions_rejected_total",
        "trajstream_positions_dropped_total",
        "trajstream_positions_corrected_total",
        "trajstream_alerts_total",
        "trajstream_kafka_errors_total",
        "trajstream_batch_size_records_bucket",
        "trajstream_inference_seconds_bucket",
        "trajstream_batch_seconds_bucket",
        "trajstream_risk_seconds_bucket",
        "trajstream_event_time_lag_seconds",
        "trajstream_active_vehicles",
        "trajstream_consumer_lag_records",
        "trajstream_build_info",
    ):
        assert expected in names, expected
    text = generate_latest(m.registry).decode()
    assert "trajstream_positions_consumed_total 5.0" in text
    assert (
        'trajstream_build_info{kafka_client="confluent",predictor="cv",stage="all",'
        'version="1.2.3"} 1.0' in text
    )


def test_build_info_replaced_not_accumulated() -> None:
    m = Metrics()
    m.set_build_info("cv", "confluent", "1")
    m.set_build_info("lstm", "kafka-python", "1")
    infos = [s for s in families(m)["trajstream_build_info"].samples]
    assert len(infos) == 1 and infos[0].labels["predictor"] == "lstm"
    m.set_build_info("cv", "confluent")  # version from the installed package
    assert families(m)["trajstream_build_info"].samples[0].labels["version"]


def test_known_label_values_precreated() -> None:
    fams = families(Metrics())
    rejected = {s.labels["reason"] for s in fams["trajstream_positions_rejected"].samples}
    assert rejected == set(REASONS)
    dropped = {s.labels["reason"] for s in fams["trajstream_positions_dropped"].samples}
    assert dropped == {"stale", "late", "future", "dense", "ahead"}
    sev = {s.labels["severity"] for s in fams["trajstream_alerts"].samples}
    assert sev == {"warning", "critical"}


def test_no_unbounded_labels() -> None:
    """Only label names from the bounded set, and no vehicle ids anywhere, even after use."""
    m = Metrics()
    for i in range(50):
        m.positions_rejected.labels(reason=REASONS[i % len(REASONS)]).inc()
        m.alerts.labels(severity="critical").inc()
        m.prediction_error.labels(model="cv", horizon=str(1 + i % 4)).observe(i / 10)
    m.set_build_info("cv", "confluent", "x")
    seen: set[str] = set()
    series: set[tuple] = set()
    for fam in families(m).values():
        for s in fam.samples:
            seen.update(k for k in s.labels if k not in ("le",))
            series.add((s.name, tuple(sorted(s.labels.items()))))
    assert seen <= LABEL_NAMES
    assert not any("vehicle" in k or "veh" in k for k in seen)
    assert all("veh-" not in str(v) for _, labels in series for _, v in labels)
    # a bounded number of series regardless of traffic
    assert len(series) < 400


def test_histogram_buckets_cover_measured_ranges() -> None:
    m = Metrics()

    def bounds(h) -> list[float]:
        return [float(b) for b in h._upper_bounds if b != float("inf")]

    inf = bounds(m.inference_seconds)
    assert inf[0] == pytest.approx(50e-6) and inf[-1] == pytest.approx(1.0)
    assert sum(1 for b in inf if b < 1e-3) >= 4  # sub-millisecond resolved
    assert sum(1 for b in inf if 0.01 <= b <= 0.1) >= 5  # 10-100 ms resolved
    assert bounds(m.batch_seconds)[-1] == pytest.approx(5.0)
    size = bounds(m.batch_size)
    assert size[0] == 1 and size[-1] == 50_000
    err = bounds(m.prediction_error)
    assert err[0] == pytest.approx(0.1) and err[-1] == pytest.approx(50.0)


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.positions_consumed.inc(3)
    assert b.registry is not a.registry
    assert "trajstream_positions_consumed_total 0.0" in generate_latest(b.registry).decode()
    shared = CollectorRegistry()
    m = Metrics(shared)
    assert m.registry is shared
    with pytest.raises(ValueError):  # duplicate names on one registry are refused
        Metrics(shared)


def test_observe_prediction_errors() -> None:
    m = Metrics()
    m.observe_prediction_errors("lstm", "2", [0.05, 0.3, 3.0, 100.0])
    h = {
        (s.name, s.labels.get("le")): s.value
        for s in families(m)["trajstream_prediction_error_meters"].samples
        if s.labels.get("model") == "lstm" and s.labels.get("horizon") == "2"
    }
    assert h[("trajstream_prediction_error_meters_count", None)] == 4
    assert h[("trajstream_prediction_error_meters_bucket", "0.1")] == 1
    assert h[("trajstream_prediction_error_meters_bucket", "50.0")] == 3
    assert h[("trajstream_prediction_error_meters_sum", None)] == pytest.approx(103.35)


def test_batched_errors_equal_one_observe_each() -> None:
    """The bucket counting shortcut gives exactly what per-value ``observe`` gives."""
    errors = np.random.default_rng(3).exponential(4.0, size=500)
    errors[:5] = [0.1, 0.2, 50.0, 50.0001, 0.0]  # on and around bucket bounds
    batched, single = Metrics(), Metrics()
    batched.observe_prediction_errors("cv", "3", errors)
    child = single.prediction_error.labels(model="cv", horizon="3")
    for e in errors:
        child.observe(float(e))

    def samples(m: Metrics) -> dict[tuple[str, str | None], float]:
        fam = families(m)["trajstream_prediction_error_meters"]
        kept = [s for s in fam.samples if "created" not in s.name]
        return {(s.name, s.labels.get("le")): s.value for s in kept}

    got, want = samples(batched), samples(single)
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k]) for k in want)


def test_serve_exposes_registry() -> None:
    m = Metrics()
    m.positions_consumed.inc(7)
    server = serve(0, m.registry, addr="127.0.0.1")
    try:
        port = server.server_port
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"trajstream_positions_consumed_total 7.0" in body
    finally:
        server.shutdown()
        server.server_close()


def test_processing_latency_counts_every_record_of_a_batch() -> None:
    m = Metrics()
    m.observe_processing(0.03, 100)  # one batch of 100 records, 30 ms
    m.observe_processing(0.2, 1)
    m.observe_processing(0.035, 2)  # on a bound: counted in that bucket (le)
    samples = {(s.name, s.labels.get("le")): s.value
               for s in families(m)["trajstream_processing_seconds"].samples}
    assert samples[("trajstream_processing_seconds_bucket", "0.02")] == 0
    assert samples[("trajstream_processing_seconds_bucket", "0.035")] == 102
    assert samples[("trajstream_processing_seconds_bucket", "0.15")] == 102
    assert samples[("trajstream_processing_seconds_bucket", "0.25")] == 103
    assert samples[("trajstream_processing_seconds_count", None)] == 103
    assert samples[("trajstream_processing_seconds_sum", None)] == pytest.approx(3.27)


def _bound_address(monkeypatch: pytest.MonkeyPatch, tmp_path, *args: str) -> str:
    """Run `process` on a small file; the address its metrics server was bound to."""
    import socket

    import orjson

    import trajstream.stream.metrics as metrics_mod
    from trajstream.cli import main

    bound: list[str] = []
    real = metrics_mod.serve

    def spy(port: int, registry, addr: str = "0.0.0.0"):  # type: ignore[no-untyped-def]
        server = real(port, registry, addr=addr)
        bound.append(server.server_address[0])
        return server

    monkeypatch.setattr(metrics_mod, "serve", spy)
    src = tmp_path / "p.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps({"vehicle_id": f"v{i % 3}", "ts": 1.77e9 + i / 10,
                                             "x": 10.0 * i, "y": 5.0 * (i % 3)})
                               for i in range(30)) + b"\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["--log-level", "ERROR", "process", "--input", str(src), "--alerts-out",
                 str(tmp_path / "a.jsonl"), "--predictor", "cv", "--metrics-port", str(port),
                 *args]) == 0
    assert len(bound) == 1
    return bound[0]


def test_metrics_bind_address_is_configurable(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path) -> None:
    """All interfaces by default (Prometheus scrapes from another container); a user on a
    shared host keeps the endpoint local with --metrics-addr or TRAJSTREAM_METRICS_ADDR."""
    monkeypatch.delenv("TRAJSTREAM_METRICS_ADDR", raising=False)
    assert _bound_address(monkeypatch, tmp_path) == "0.0.0.0"
    assert _bound_address(monkeypatch, tmp_path, "--metrics-addr", "127.0.0.1") == "127.0.0.1"
    monkeypatch.setenv("TRAJSTREAM_METRICS_ADDR", "127.0.0.1")
    assert _bound_address(monkeypatch, tmp_path) == "127.0.0.1"


def test_an_address_that_cannot_be_bound_is_one_warning(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    import logging

    from trajstream.stream.commands import _serve_metrics

    caplog.set_level(logging.WARNING, logger="trajstream")
    assert _serve_metrics(9100, "192.0.2.1", Metrics()) is None  # TEST-NET: not ours
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "metrics not served: 192.0.2.1 port 9100" in warned[0]
