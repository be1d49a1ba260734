#!/usr/bin/env python3
"""Run a single-node KRaft Apache Kafka broker from the Maven jars in broker/lib.

For tests and local runs on a machine without Docker: one JVM that is both controller and
broker, PLAINTEXT on 127.0.0.1, settings suited to tests (auto-created topics, replication
factor 1) and Kafka's initial rebalance delay (a new group's first assignment waits 3 s for
more members, so processes started together join in one assignment). Stdlib only and free
of project imports, so it runs from `make` with the system python3 and loads into pytest
without the package installed.

    python3 broker/broker.py jars                      # resolve jars into broker/lib (Maven)
    python3 broker/broker.py start [--port 9092] [--controller-port 9093] [--dir .kafka]
    python3 broker/broker.py status|stop [--dir .kafka]

Importable: ``start_broker(port, controller_port, data_dir, wait_s)`` returns a
:class:`Broker` handle with ``.bootstrap``, ``.stop()`` and ``.restart()`` (same data dir and
ports, so committed offsets and topics survive a restart). ``sasl_port`` and
``scram_users`` add a SASL_SSL listener taking SCRAM-SHA-512 users over TLS, its certificate
signed by a throwaway CA (``handle.ca_path``) made with openssl (the security test).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

KAFKA_DIR = Path(__file__).resolve().parent
LIB_DIR = KAFKA_DIR / "lib"
POM = KAFKA_DIR / "pom.xml"
STAMP = LIB_DIR / ".resolved"

HOST = "127.0.0.1"
NODE_ID = 1
HEAP = "-Xmx512m"
INSTALL_HINT = "apt-get install openjdk-17-jre-headless maven"


class BrokerError(RuntimeError):
    """The broker could not be set up, started or stopped; the message says what to do."""


# --------------------------------------------------------------------------- prerequisites


def _require(tool: str, what: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(
            f"`{tool}` not found: the Kafka test broker needs {what}; "
            f"install it, e.g. `{INSTALL_HINT}`"
        )
    return path


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def _jars_present(lib_dir: Path) -> bool:
    return any(lib_dir.glob("kafka_2.13-*.jar")) and any(lib_dir.glob("kafka-clients-*.jar"))


def ensure_jars(lib_dir: Path = LIB_DIR, *, quiet: bool = False) -> Path:
    """Resolve the broker jars from Maven Central unless broker/lib matches kafka/pom.xml."""
    digest = _pom_digest()
    stamped = STAMP.read_text().strip() if STAMP.exists() else ""
    if stamped == digest and _jars_present(lib_dir):
        STAMP.touch()
        return lib_dir
    _require("java", "a Java 17+ runtime")
    mvn = shutil.which("mvn")
    if mvn is None:
        if _jars_present(lib_dir):  # placed by hand: use them as they are
            return lib_dir
        _require("mvn", "Maven to fetch the Kafka jars into broker/lib")
    lib_dir.mkdir(parents=True, exist_ok=True)
    for old in lib_dir.glob("*.jar"):  # a changed pom must not leave two versions on the path
        old.unlink()
    if not quiet:
        print(f"resolving Kafka jars into {lib_dir} (Maven)...", file=sys.stderr, flush=True)
    cmd = [
        str(mvn), "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={lib_dir}", "-DincludeScope=runtime",
    ]
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0 or not _jars_present(lib_dir):
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise BrokerError(
            f"Maven could not resolve the Kafka jars (exit {done.returncode}):\n{tail}"
        )
    STAMP.write_text(digest + "\n")
    return lib_dir


# --------------------------------------------------------------------------- files


def _cluster_id() -> str:
    """A random Kafka cluster id (base64url of 16 bytes, as `kafka-storage random-uuid`)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


SCRAM_MECHANISM = "SCRAM-SHA-512"


# Kafka's default: the first member of an empty group waits this long (and each member
# joining meanwhile again, up to the rebalance timeout) before the group's first assignment.
INITIAL_REBALANCE_DELAY_MS = 3000


TLS_PASSWORD = "trajstream-test-only"  # of the throwaway keystore, not a secret


def make_test_tls(tls_dir: Path) -> None:
    """A throwaway CA (``ca.pem``) and a certificate for 127.0.0.1 and localhost signed by
    it, in the PKCS#12 keystore ``server.p12`` the broker's TLS listener serves; made once."""
    if (tls_dir / "server.p12").exists():
        return
    if shutil.which("openssl") is None:
        raise BrokerError("the TLS listener needs openssl to make its test certificate "
                          "(apt-get install openssl)")
    tls_dir.mkdir(parents=True, exist_ok=True)
    (tls_dir / "san.ext").write_text(f"subjectAltName=IP:{HOST},DNS:localhost\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
         "ca.pem", "-days", "3650", "-subj", "/CN=trajstream test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
         "server.csr", "-subj", f"/CN={HOST}"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "3650", "-extfile", "san.ext"],
        ["pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key", "-certfile",
         "ca.pem", "-out", "server.p12", "-passout", f"pass:{TLS_PASSWORD}"],
    ]
    for args in steps:
        done = subprocess.run(["openssl", *args], cwd=tls_dir, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)
        if done.returncode != 0:
            raise BrokerError(f"openssl {args[0]} failed: {done.stderr.strip()[-1000:]}")


def _server_properties(data_dir: Path, port: int, controller_port: int,
                       sasl_port: int | None = None,
                       initial_rebalance_delay_ms: int = INITIAL_REBALANCE_DELAY_MS) -> str:
    listeners = f"PLAINTEXT://{HOST}:{port}"
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    sasl = ""
    if sasl_port is not None:  # a second listener: only SCRAM-authenticated clients, over TLS
        listeners += f",SASL_SSL://{HOST}:{sasl_port}"
        protocols += ",SASL_SSL:SASL_SSL"
        keystore = data_dir / "tls" / "server.p12"
        sasl = (f"sasl.enabled.mechanisms={SCRAM_MECHANISM}\n"
                f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
                f"listener.name.sasl_ssl.ssl.keystore.type=PKCS12\n"
                f"listener.name.sasl_ssl.ssl.keystore.location={keystore}\n"
                f"listener.name.sasl_ssl.ssl.keystore.password={TLS_PASSWORD}\n"
                f"listener.name.sasl_ssl.ssl.key.password={TLS_PASSWORD}\n")
    return f"""\
# Written by broker/broker.py on every start; edit the script, not this file.
process.roles=broker,controller
node.id={NODE_ID}
controller.quorum.voters={NODE_ID}@{HOST}:{controller_port}
listeners={listeners},CONTROLLER://{HOST}:{controller_port}
advertised.listeners={listeners}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map={protocols}
{sasl}log.dirs={data_dir / "data"}
num.network.threads=2
num.io.threads=4
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms={initial_rebalance_delay_ms}
group.min.session.timeout.ms=1000
log.segment.bytes=16777216
log.retention.hours=24
log.retention.check.interval.ms=60000
log.cleaner.dedupe.buffer.size=16777216
"""


def _log4j2_properties(logs_dir: Path) -> str:
    return f"""\
status = warn
name = trajstream-test-broker
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {logs_dir}/server.log
appender.file.filePattern = {logs_dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.request.additivity = false
logger.request.appenderRef.file.ref = FILE
"""


def _java_cmd(data_dir: Path, main: str, *args: str) -> list[str]:
    return [
        _require("java", "a Java 17+ runtime"),
        HEAP,
        "-Xms128m",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={data_dir / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={data_dir / 'logs'}",
        "-cp",
        f"{LIB_DIR}/*",
        main,
        *args,
    ]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# --------------------------------------------------------------------------- readiness probe


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        buf += chunk
    return bytes(buf)


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client_id = b"trajstream-broker-probe"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _read_exact(sock, 4))
    response = _read_exact(sock, size)
    if struct.unpack(">i", response[:4])[0] != corr:
        raise ConnectionError("unexpected correlation id")
    return response[4:]


def _metadata_version(sock: socket.socket) -> int:
    """Pick a non-flexible Metadata version (1..8) from the broker's ApiVersions v0 answer."""
    resp = _request(sock, 18, 0, 1, b"")
    error, count = struct.unpack(">hi", resp[:6])
    if error:
        raise ConnectionError(f"ApiVersions error {error}")
    for i in range(count):
        key, lo, hi = struct.unpack(">hhh", resp[6 + 6 * i : 12 + 6 * i])
        if key == 3:
            best = min(hi, 8)
            if best < max(lo, 1):
                raise ConnectionError(f"no usable Metadata version in {lo}..{hi}")
            return best
    raise ConnectionError("broker does not offer Metadata")


def broker_ready(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when the broker answers Metadata and lists itself (registered and unfenced).

    Brokers leave fenced nodes out of Metadata, so this is the point from which clients can
    produce, consume and auto-create topics.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            version = _metadata_version(sock)
            body = struct.pack(">i", 0)  # an empty topic list: brokers only
            if version >= 4:
                body += b"\x00"  # allow_auto_topic_creation
            if version >= 8:
                body += b"\x00\x00"  # include cluster / topic authorized operations
            resp = _request(sock, 3, version, 2, body)
    except (OSError, ConnectionError, struct.error):
        return False
    pos = 4 if version >= 3 else 0  # throttle_time_ms
    try:
        (count,) = struct.unpack_from(">i", resp, pos)
        pos += 4
        for _ in range(count):
            _node, host_len = struct.unpack_from(">ih", resp, pos)
            pos += 6 + host_len
            (broker_port,) = struct.unpack_from(">i", resp, pos)
            pos += 4
            (rack_len,) = struct.unpack_from(">h", resp, pos)
            pos += 2 + max(rack_len, 0)
            if broker_port == port:
                return True
    except struct.error:
        return False
    return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """An ephemeral port that is free right now (for tests that start their own broker)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is dead for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _pid_alive(pid)
    return b"kafka.Kafka" in cmdline and str(data_dir / "server.properties").encode() in cmdline


def _die_with_parent() -> None:
    """Child-side: get SIGTERM when the process that started the broker dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Broker:
    """A handle on one broker process and its data dir; see :func:`start_broker`."""

    def __init__(self, port: int, controller_port: int, data_dir: Path, *, detach: bool,
                 sasl_port: int | None = None,
                 scram_users: dict[str, str] | None = None,
                 initial_rebalance_delay_ms: int = INITIAL_REBALANCE_DELAY_MS) -> None:
        self.port = port
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.controller_port = controller_port
        self.data_dir = data_dir
        self.detach = detach
        self.sasl_port = sasl_port
        self.scram_users = dict(scram_users or {})
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        """``HOST:PORT`` of the SASL_SSL (SCRAM over TLS) listener, None without one."""
        return None if self.sasl_port is None else f"{HOST}:{self.sasl_port}"

    @property
    def ca_path(self) -> Path:
        """The CA certificate (PEM) that signed the SASL_SSL listener's certificate."""
        return self.data_dir / "tls" / "ca.pem"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "server.log"

    def __repr__(self) -> str:
        return f"Broker(bootstrap={self.bootstrap!r}, pid={self.pid}, dir={str(self.data_dir)!r})"

    # -- lifecycle

    def start(self, wait_s: float = 60.0) -> Broker:
        """Format the data dir on first use, launch the JVM and wait until clients can use it."""
        if self.is_running():
            return self
        for p in (self.port, self.controller_port, self.sasl_port):
            if p is not None and not _port_free(p):
                raise BrokerError(f"port {p} on {HOST} is in use (another Kafka?); pick another")
        ensure_jars(quiet=True)
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        if self.sasl_port is not None:
            make_test_tls(self.data_dir / "tls")
        props = self.data_dir / "server.properties"
        props.write_text(_server_properties(self.data_dir, self.port, self.controller_port,
                                            self.sasl_port, self.initial_rebalance_delay_ms))
        (self.data_dir / "log4j2.properties").write_text(_log4j2_properties(self.data_dir / "logs"))
        if not (self.data_dir / "data" / "meta.properties").exists():
            self._format(props)
        out = (self.data_dir / "broker.out").open("ab")
        try:
            self._proc = subprocess.Popen(
                _java_cmd(self.data_dir, "kafka.Kafka", str(props)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=None if self.detach else _die_with_parent,
            )
        finally:
            out.close()
        self.pid = self._proc.pid
        (self.data_dir / "broker.pid").write_text(f"{self.pid}\n")
        (self.data_dir / "broker.json").write_text(
            json.dumps({"pid": self.pid, "port": self.port,
                        "controller_port": self.controller_port, "bootstrap": self.bootstrap})
        )
        self._wait_ready(wait_s)
        return self

    def _format(self, props: Path) -> None:
        # SCRAM credentials live in the cluster metadata: KRaft takes them at format time
        scram = [a for user, password in self.scram_users.items()
                 for a in ("--add-scram",
                           f"{SCRAM_MECHANISM}=[name={user},password={password}]")]
        cmd = _java_cmd(self.data_dir, "kafka.tools.StorageTool", "format",
                        "-t", _cluster_id(), "-c", str(props), *scram)
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              cwd=self.data_dir, timeout=120)
        if done.returncode != 0:
            raise BrokerError(
                f"formatting {self.data_dir / 'data'} failed (exit {done.returncode}):\n"
                + (done.stdout + done.stderr).strip()[-2000:]
            )

    def _wait_ready(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not self.is_running():
                out = _tail(self.data_dir / "broker.out")
                raise BrokerError(
                    f"the Kafka broker exited during start-up; last log lines "
                    f"({self.log_path}):\n{_tail(self.log_path)}\n{out}"
                )
            if broker_ready(HOST, self.port):
                return
            time.sleep(0.2)
        self.stop()
        raise BrokerError(
            f"the Kafka broker did not become ready within {wait_s:.0f} s; last log lines "
            f"({self.log_path}):\n{_tail(self.log_path)}"
        )

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid is not None and _pid_alive(self.pid)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (clean shutdown keeps restarts fast), SIGKILL after ``timeout_s``."""
        if self.pid is None or not self.is_running():
            self._forget()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        if not self._wait_exit(timeout_s):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._wait_exit(10.0)
        self._forget()

    def kill(self) -> None:
        """SIGKILL without a clean shutdown (to test crash recovery)."""
        if self.pid is not None and self.is_running():
            os.kill(self.pid, signal.SIGKILL)
            self._wait_exit(10.0)
        self._forget()

    def restart(self, wait_s: float = 60.0) -> Broker:
        """Stop and start again on the same ports and data dir (topics and offsets survive)."""
        self.stop()
        return self.start(wait_s)

    def _wait_exit(self, timeout_s: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running():
                return True
            time.sleep(0.1)
        return False

    def _forget(self) -> None:
        self._proc = None
        self.pid = None
        for name in ("broker.pid", "broker.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / name).unlink()

    @classmethod
    def from_dir(cls, data_dir: Path) -> Broker | None:
        """The broker recorded in ``data_dir`` if its process is still alive."""
        data_dir = Path(data_dir).resolve()
        try:
            info = json.loads((data_dir / "broker.json").read_text())
        except (OSError, ValueError):
            return None
        broker = cls(int(info["port"]), int(info["controller_port"]), data_dir, detach=True)
        pid = int(info["pid"])
        if _pid_alive(pid) and _is_our_broker(pid, data_dir):
            broker.pid = pid
            return broker
        return None


def start_broker(
    port: int = 9092,
    controller_port: int = 9093,
    data_dir: str | os.PathLike[str] = ".kafka",
    wait_s: float = 60.0,
    *,
    detach: bool = False,
    sasl_port: int | None = None,
    scram_users: dict[str, str] | None = None,
    initial_rebalance_delay_ms: int = INITIAL_REBALANCE_DELAY_MS,
) -> Broker:
    """Start a broker and return once a client can produce to ``handle.bootstrap``.

    Unless ``detach``, the broker receives SIGTERM if the calling process dies, so a crashed
    test run leaves no JVM behind. With ``sasl_port`` a second listener there
    (``handle.sasl_bootstrap``, TLS: trust ``handle.ca_path``) takes only clients
    authenticated with SCRAM-SHA-512 as one of ``scram_users`` (name -> password, written
    into the metadata when the data dir is formatted). ``initial_rebalance_delay_ms``:
    Kafka's 3 s by default; 0 makes a lone member's first assignment immediate, but members
    started together then join one by one, each join an eager rebalance in which the others
    give up all their partitions.
    """
    return Broker(port, controller_port, Path(data_dir).resolve(), detach=detach,
                  sasl_port=sasl_port, scram_users=scram_users,
                  initial_rebalance_delay_ms=initial_rebalance_delay_ms).start(wait_s)


# --------------------------------------------------------------------------- CLI


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="broker/broker.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("jars", help="resolve the Kafka jars into broker/lib with Maven")
    start = sub.add_parser("start", help="start a broker in the background and wait for it")
    start.add_argument("--port", type=int, default=9092, help="PLAINTEXT port (default 9092)")
    start.add_argument("--controller-port", type=int, default=9093,
                       help="KRaft controller port (default 9093)")
    start.add_argument("--wait-s", type=float, default=60.0,
                       help="seconds to wait until clients can use it (default 60)")
    start.add_argument("--initial-rebalance-delay-ms", type=int,
                       default=INITIAL_REBALANCE_DELAY_MS,
                       help="group.initial.rebalance.delay.ms (default Kafka's, "
                            f"{INITIAL_REBALANCE_DELAY_MS})")
    for name, help_ in (("start", None), ("stop", "stop the broker"),
                        ("status", "say whether the broker runs and answers")):
        p = start if name == "start" else sub.add_parser(name, help=help_)
        p.add_argument("--dir", default=".kafka", help="data dir (default .kafka)")
    args = parser.parse_args(argv)

    try:
        if args.command == "jars":
            print(ensure_jars())
            return 0
        data_dir = Path(args.dir).resolve()
        running = Broker.from_dir(data_dir)
        if args.command == "start":
            if running is not None:
                print(f"already running (pid {running.pid}): bootstrap {running.bootstrap}")
                return 0
            broker = start_broker(args.port, args.controller_port, data_dir, args.wait_s,
                                  detach=True,
                                  initial_rebalance_delay_ms=args.initial_rebalance_delay_ms)
            print(f"Kafka {broker.bootstrap} ready (pid {broker.pid}, logs {broker.log_path})")
            return 0
        if args.command == "stop":
            if running is None:
                print(f"no broker running for {data_dir}")
                return 0
            pid = running.pid
            running.stop()
            print(f"stopped broker pid {pid}")
            return 0
        # status
        if running is None:
            print(f"not running ({data_dir})")
            return 1
        if broker_ready(HOST, running.port):
            print(f"running (pid {running.pid}): bootstrap {running.bootstrap}")
            return 0
        print(f"process {running.pid} is up but {running.bootstrap} does not answer yet")
        return 1
    except BrokerError as exc:
        print(f"broker/broker.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_cli())
