"""Fixtures shared by every test: a real Kafka broker, unique topic names, both clients.

The broker starts lazily, once per session, the first time a test asks for it: unit-only
runs never start a JVM. Set TRAJSTREAM_TEST_BOOTSTRAP=HOST:PORT to use a running broker
instead (e.g. after `make kafka-up`); tests that need to stop or restart the broker then skip.
Fixtures for one area belong in tests/unit/conftest.py or tests/integration/conftest.py.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BOOTSTRAP_ENVVAR = "TRAJSTREAM_TEST_BOOTSTRAP"


def _load_broker_module() -> ModuleType:
    """broker/broker.py is a script, not a package: load it by path."""
    name = "trajstream_test_broker"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "broker" / "broker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's own broker handle (``.bootstrap``, ``.stop()``, ``.restart()``).

    Skips when TRAJSTREAM_TEST_BOOTSTRAP points at an external broker, which tests must not
    stop. Fails (never skips) when java or the jars are missing: the suite needs Kafka.
    """
    if os.environ.get(BOOTSTRAP_ENVVAR):
        pytest.skip(f"{BOOTSTRAP_ENVVAR} is set: no managed broker to stop or restart")
    broker_mod = _load_broker_module()
    data_dir = tmp_path_factory.mktemp("kafka")
    try:
        # No initial rebalance delay (Kafka's is 3 s): the suite starts about a hundred
        # fresh groups, nearly all with one member, and each would wait it out. Members
        # started together therefore join one by one here, each join an eager rebalance:
        # harsher than a production broker, which groups them into one assignment.
        broker = broker_mod.start_broker(
            broker_mod.free_port(), broker_mod.free_port(), data_dir, wait_s=90,
            initial_rebalance_delay_ms=0,
        )
    except broker_mod.BrokerError as exc:
        pytest.fail(f"could not start the test Kafka broker: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """``HOST:PORT`` of a broker that is up: TRAJSTREAM_TEST_BOOTSTRAP or the session's own.

    Tests that stop or restart the broker must use ``kafka_broker`` and call
    ``kafka_broker.restart()`` before they end, so later tests find it running.
    """
    external = os.environ.get(BOOTSTRAP_ENVVAR)
    if external:
        return external
    broker: Any = request.getfixturevalue("kafka_broker")
    return str(broker.bootstrap)


@pytest.fixture
def new_topic(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """A factory of unique topic names: ``new_topic("alerts")`` -> ``t-<test>-alerts-<hex>``."""
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60].strip("-")

    def make(suffix: str = "") -> str:
        parts = ["t", test, suffix, uuid.uuid4().hex[:8]]
        return "-".join(p for p in parts if p)

    return make


@pytest.fixture
def topic_name(new_topic: Callable[[str], str]) -> str:
    """One unique topic name for this test."""
    return new_topic("")


@pytest.fixture(params=["confluent", "kafka-python"])
def kafka_client(request: pytest.FixtureRequest) -> str:
    """Runs the test once per Kafka client implementation."""
    return str(request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration carries the ``integration`` marker."""
    integration_dir = REPO / "tests" / "integration"
    for item in items:
        if integration_dir in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)
