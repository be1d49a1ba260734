"""Client-independent pieces of the Kafka adapter: bootstrap parsing, readiness, group names."""

from __future__ import annotations

import logging
import socket
import time
import uuid

from trajstream.errors import ConfigError, KafkaUnavailable

log = logging.getLogger("trajstream.stream.kafka")

# Watermarks fetched from the broker for lag() are reused for this long.
WATERMARK_CACHE_S = 1.0


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """``"host:port[,host:port...]"`` (IPv6 as ``[::1]:9092``) -> [(host, port)]."""
    servers: list[tuple[str, int]] = []
    for item in str(bootstrap).split(","):
        item = item.strip()
        host, sep, port_text = item.rpartition(":")
        host = host.strip("[]")
        if not item or not sep or not host or not port_text.isdigit():
            raise ConfigError(
                f"invalid Kafka bootstrap {bootstrap!r}: expected HOST:PORT[,HOST:PORT...]"
            )
        port = int(port_text)
        if not 0 < port < 65536:
            raise ConfigError(f"invalid Kafka bootstrap {bootstrap!r}: port {port} out of range")
        servers.append((host, port))
    return servers


def throwaway_group() -> str:
    return f"trajstream-tmp-{uuid.uuid4().hex[:12]}"


def unreachable(bootstrap: str, why: str) -> KafkaUnavailable:
    return KafkaUnavailable(
        f"cannot reach Kafka at {bootstrap} ({why}); is the broker running? "
        f"(`make kafka-up` starts one on 127.0.0.1:9092)"
    )


def wait_until_ready(bootstrap: str, timeout_s: float, client: str) -> None:
    """TCP first (quiet and fast to retry), then one metadata round trip with the client."""
    servers = parse_bootstrap(bootstrap)
    deadline = time.monotonic() + max(timeout_s, 0.0)
    last_error = "no attempt"
    while True:
        for host, port in servers:
            remaining = deadline - time.monotonic()
            try:
                with socket.create_connection((host, port), timeout=max(min(remaining, 1.0), 0.05)):
                    pass
            except OSError as exc:
                last_error = exc.strerror or type(exc).__name__
                continue
            if _metadata_ok(bootstrap, max(deadline - time.monotonic(), 1.0), client):
                return
            last_error = "the port is open but no Kafka metadata came back"
        if time.monotonic() >= deadline:
            raise unreachable(bootstrap, f"{last_error.lower()} after {timeout_s:g} s")
        time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))


def _metadata_ok(bootstrap: str, timeout_s: float, client: str) -> bool:
    if client == "confluent":
        from trajstream.stream.kafka._confluent import metadata_ok
    else:
        from trajstream.stream.kafka._kafkapython import metadata_ok
    return metadata_ok(bootstrap, timeout_s)
