"""The processor's configuration: frozen, typed, validated once at start-up.

Two objects: :class:`EngineConfig` holds everything the pure core needs (event-time rules,
horizon, risk and episode settings) and :class:`ProcessorConfig` adds where records come from
and where outputs go. Both raise :class:`~stream.errors.ConfigError` on a contradiction, so a
bad combination stops the command with one line instead of misbehaving later.

Every default lives here: :data:`DEFAULTS` (I/O and the loop), :data:`ENGINE_DEFAULTS`,
:data:`RISK_DEFAULTS`, :data:`EPISODE_DEFAULTS` and :data:`CODEC_DEFAULTS` (the dataclasses'
own defaults, so a config built in code and the CLI agree); ``trajstream process --help``
reads them from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from trajstream.contracts import (
    ALERTS_TOPIC,
    POSITIONS_TOPIC,
    PREDICTED_TOPIC,
    PREDICTIONS_TOPIC,
    PREDICTORS,
)
from trajstream.errors import ConfigError
from trajstream.model.predictors import PathSpec
from trajstream.outputs import refuse_aliases
from trajstream.stream.codec import CodecConfig
from trajstream.stream.cpus import usable_cpus
from trajstream.stream.episodes import EpisodeConfig
from trajstream.stream.risk import RiskConfig

__all__ = [
    "CODEC_DEFAULTS",
    "DEFAULTS",
    "ENGINE_DEFAULTS",
    "EPISODE_DEFAULTS",
    "MIN_RISK_INTERVAL_S",
    "RISK_DEFAULTS",
    "EngineConfig",
    "PredictorName",
    "ProcessorConfig",
    "SourceKind",
    "StageName",
]

SourceKind = Literal["kafka", "file", "memory"]
StageName = Literal["all", "predict", "risk"]
STAGES: tuple[str, ...] = ("all", "predict", "risk")
PredictorName = Literal["lstm", "cv", "ctrv"]


@dataclass(frozen=True)
class _Defaults:
    bootstrap: str = "127.0.0.1:9092"
    positions_topic: str = POSITIONS_TOPIC
    alerts_topic: str = ALERTS_TOPIC
    predictions_topic: str = PREDICTIONS_TOPIC
    group: str = "trajstream-processor"
    predictor: str = "lstm"
    max_batch_records: int = 5000
    max_batch_wait_ms: int = 100
    commit_interval_s: float = 1.0
    metrics_port: int = 9100
    # all interfaces: Prometheus scrapes from another container (compose, Kubernetes)
    metrics_addr: str = "0.0.0.0"
    max_stall_s: float = 120.0
    stage: str = "all"
    internal_topic: str | None = None  # None: "<group>-predicted-kinematics"
    tile_m: float = 1000.0
    # the halo: vehicles faster than this can meet a pair's owner tile unseen (m/s)
    max_speed_mps: float = 40.0
    halo_margin_m: float = 10.0


DEFAULTS = _Defaults()

# Every risk tick assesses every recent vehicle pair: 20 ticks per second of event time is
# finer than any fix rate we see (10 Hz), and a finer interval only multiplies the work (at
# 1e-6 s a run never ends).
MIN_RISK_INTERVAL_S = 0.05


def _finite_pos(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True)
class EngineConfig:
    """Event-time rules of the core (see stream/engine.py for how they interact).

    - ``allowed_lateness_s``: how far behind the newest event time (of its own input
      partition, and of the watermark) a record may arrive and still be used (older ones are
      dropped ``late``); also how long a tick waits for a partition that has stopped
      delivering (state expiry and episode ends follow ticks).
    - ``tick_lateness_s``: a tick is assessed as soon as every input partition has delivered
      a fix this far past its end (the evidence that its fixes are in), without waiting
      ``allowed_lateness_s``. A fix that arrives behind its partition by more than this is
      still used, at the partition's current tick instead of its own. Capped at
      ``allowed_lateness_s``.
    - ``release_on_cadence``: a tick is also complete once every vehicle due in it by its
      reporting cadence has reported (stream/cadence.py): at 10 Hz a tick is out with its
      last fix rather than the next one. Which tick a record belongs to is the same either
      way; off, only the evidence and the watermark release ticks (for comparisons).
    - ``tick_s``: the engine's step of event time. Records are released, vehicles updated
      and alert episodes tracked tick by tick; a conflict awaiting confirmation is assessed
      again at the next tick, on each vehicle's next fix, so one near contact is confirmed
      a tick after it is found rather than one ``risk_interval_s`` (stream/episodes.py).
    - ``risk_interval_s``: the whole fleet is assessed at event times that are multiples of
      this (a multiple of ``tick_s``).
    - ``stale_after_s``: a vehicle takes part in risk only if its last fix is this recent.
    - ``ttl_s``: a vehicle silent this long (event time) is forgotten; bounds memory.
    - ``reset_gap_s``: a gap this long between two fixes restarts the vehicle's motion state.
    - ``max_future_s``: a record this far ahead of both the newest event time seen and the
      wall clock is dropped ``future``, so one wrong clock cannot stall everyone.
    - ``max_partition_skew_s``: when catching up on several partitions, the watermark waits
      for a partition that still has records to deliver, unless it trails the newest by more
      than this (bounds the records held back in memory).
    - ``max_clock_skew_s``: a vehicle whose fix jumps this far past the newest event time
      accepted in its partition, with no other vehicle confirming the jump, is quarantined
      (dropped ``ahead``): one fast clock cannot make everyone else late.
    - ``min_fix_interval_s``: at most one fix per vehicle per bucket of this much event time
      is used (100 Hz by default); more is dropped ``dense``.
    - ``error_anchor_interval_s``: one prediction per vehicle per interval is kept and
      scored against the positions observed 1-4 s later (online prediction error).
    - ``risk`` / ``episodes``: ``stream.risk.RiskConfig`` / ``stream.episodes.EpisodeConfig``;
      ``None`` means their defaults.
    """

    horizon_s: float = 4.0
    step_s: float = 0.2
    allowed_lateness_s: float = 0.5
    tick_lateness_s: float = 0.05
    release_on_cadence: bool = True
    tick_s: float = 0.1
    risk_interval_s: float = 0.2
    stale_after_s: float = 1.0
    ttl_s: float = 30.0
    reset_gap_s: float = 5.0
    max_future_s: float = 30.0
    max_partition_skew_s: float = 300.0
    min_fix_interval_s: float = 0.01
    max_clock_skew_s: float = 0.5
    error_anchor_interval_s: float = 1.0
    gps_sigma_m: float = 0.3  # position noise assumed until a vehicle's fixes measure their own
    emit_predictions: bool = False
    risk: Any = None
    episodes: Any = None

    def __post_init__(self) -> None:
        for name in ("horizon_s", "step_s", "tick_s", "risk_interval_s", "stale_after_s", "ttl_s",
                     "reset_gap_s", "max_future_s", "max_partition_skew_s", "min_fix_interval_s",
                     "max_clock_skew_s",
                     "error_anchor_interval_s", "gps_sigma_m"):
            _finite_pos(name, float(getattr(self, name)))
        _finite_pos("allowed_lateness_s", float(self.allowed_lateness_s), allow_zero=True)
        _finite_pos("tick_lateness_s", float(self.tick_lateness_s), allow_zero=True)
        if self.tick_s < MIN_RISK_INTERVAL_S:
            raise ConfigError(f"tick_s must be >= {MIN_RISK_INTERVAL_S} s, got {self.tick_s!r}")
        if self.risk_interval_s < MIN_RISK_INTERVAL_S:
            raise ConfigError(
                f"risk_interval_s must be >= {MIN_RISK_INTERVAL_S} s, got "
                f"{self.risk_interval_s!r}: each tick assesses every recent vehicle pair, so a "
                f"finer interval multiplies the work without seeing more")
        per_tick = self.risk_interval_s / self.tick_s
        if per_tick < 1 - 1e-9 or abs(per_tick - round(per_tick)) > 1e-6:
            raise ConfigError(
                f"risk_interval_s ({self.risk_interval_s}) must be a multiple of tick_s "
                f"({self.tick_s}); set tick_s to it to assess the whole fleet at every tick")
        ratio = self.horizon_s / self.step_s
        if abs(ratio - round(ratio)) > 1e-6:
            raise ConfigError(
                f"horizon_s ({self.horizon_s}) must be a multiple of step_s ({self.step_s})"
            )
        if self.stale_after_s < self.risk_interval_s:
            raise ConfigError(
                f"stale_after_s ({self.stale_after_s}) must be >= risk_interval_s "
                f"({self.risk_interval_s}), or vehicles drop out of risk between two ticks"
            )
        if self.reset_gap_s > self.ttl_s:
            raise ConfigError(
                f"reset_gap_s ({self.reset_gap_s}) must be <= ttl_s ({self.ttl_s})"
            )
        if self.ttl_s <= self.allowed_lateness_s + self.risk_interval_s:
            raise ConfigError(
                f"ttl_s ({self.ttl_s}) must exceed allowed_lateness_s + risk_interval_s"
            )
        warn = getattr(self.risk, "warning_ttc_s", None)
        crit = getattr(self.risk, "critical_ttc_s", None)
        if warn is not None and crit is not None and not warn > crit:
            raise ConfigError(
                f"warning_ttc_s ({warn}) must be greater than critical_ttc_s ({crit})"
            )
        if warn is not None and warn > self.horizon_s:
            raise ConfigError(
                f"warning_ttc_s ({warn}) must be <= horizon_s ({self.horizon_s}): risk "
                f"cannot be seen beyond the predicted path"
            )

    @property
    def spec(self) -> PathSpec:
        return PathSpec(horizon_s=self.horizon_s, step_s=self.step_s)

    @property
    def ticks_per_risk(self) -> int:
        """Ticks per whole-fleet assessment: tick k assesses the whole fleet when
        ``k % ticks_per_risk == 0``."""
        return int(round(self.risk_interval_s / self.tick_s))


ENGINE_DEFAULTS = EngineConfig()
RISK_DEFAULTS = RiskConfig()
EPISODE_DEFAULTS = EpisodeConfig()
CODEC_DEFAULTS = CodecConfig()


@dataclass(frozen=True)
class ProcessorConfig:
    """Where records come from, where outputs go, and the loop's batching.

    Exactly one source: ``kafka`` (``bootstrap`` + ``positions_topic``), ``file``
    (``input_path``, read to the end) or ``memory`` (the demo's in-process queue). Outputs
    follow the source: Kafka topics for Kafka, JSONL files (``-`` = stdout) otherwise.
    A poll returns what has arrived, up to ``max_batch_records``, as soon as there is
    something, and waits at most ``max_batch_wait_ms`` for the first record: batches grow
    with the load (what arrived while the previous one was processed), never by waiting.
    ``kafka_config`` is passed to every Kafka client as is
    (security settings belong there), ``consumer_config``/``producer_config``/
    ``admin_config`` to that role's client only.
    Fault tolerance (Kafka only): ``changelog`` keeps per-vehicle state in a compacted topic
    (``changelog_topic``, default ``<group>-changelog``); ``exactly_once`` makes each commit
    interval one Kafka transaction (outputs, changelog, offsets); ``max_stall_s`` is how long
    the processor retries a broker it cannot reach before it exits non-zero.
    """

    source: SourceKind
    engine: EngineConfig = field(default_factory=EngineConfig)
    codec: Any = None  # stream.codec.CodecConfig; None = defaults
    predictor: PredictorName = "lstm"
    # Kafka
    bootstrap: str | None = None
    positions_topic: str = DEFAULTS.positions_topic
    alerts_topic: str | None = DEFAULTS.alerts_topic
    predictions_topic: str | None = None
    dlq_topic: str | None = None
    group: str = DEFAULTS.group
    instance_id: str | None = None  # static group membership (group.instance.id)
    kafka_client: str | None = None
    kafka_config: Mapping[str, str] = field(default_factory=dict)  # every client
    consumer_config: Mapping[str, str] = field(default_factory=dict)
    producer_config: Mapping[str, str] = field(default_factory=dict)
    admin_config: Mapping[str, str] = field(default_factory=dict)
    from_beginning: bool = True
    until_end: bool = False
    # files
    input_path: str | None = None
    alerts_out: str | None = None
    predictions_out: str | None = None
    dlq_out: str | None = None
    # loop
    max_batch_records: int = DEFAULTS.max_batch_records
    max_batch_wait_ms: int = DEFAULTS.max_batch_wait_ms
    commit_interval_s: float = DEFAULTS.commit_interval_s
    metrics_port: int | None = None
    # fault tolerance (Kafka)
    changelog: bool = True
    changelog_topic: str | None = None  # None: "<group>-changelog"
    exactly_once: bool = False
    transactional_id: str | None = None  # None: see the tx_id property
    max_stall_s: float = DEFAULTS.max_stall_s
    # two stages (Kafka): predict (vehicle-keyed) -> internal_topic -> risk (tile-keyed)
    stage: StageName = "all"
    internal_topic: str | None = DEFAULTS.internal_topic
    tile_m: float = DEFAULTS.tile_m
    halo_m: float | None = None  # None: max_speed_mps x horizon + halo_margin_m
    # the conflict stage in a child process (stream/risk_process.py); None: when this
    # process may use two or more CPUs
    risk_process: bool | None = None

    @property
    def risk_in_process(self) -> bool:
        """Whether the conflict stage runs in a child process (``risk_process`` resolved)."""
        if self.risk_process is not None:
            return self.risk_process
        return usable_cpus() >= 2

    @property
    def consumer_group(self) -> str:
        """The stage's consumer group: ``group``, ``<group>-risk`` for the risk stage."""
        return f"{self.group}-risk" if self.stage == "risk" else self.group

    @property
    def tx_id(self) -> str:
        """The producer's transactional id (``exactly_once``): ``transactional_id``, else
        ``<consumer group>-<instance id>-tx``, else ``<consumer group>-tx``.

        Each running member of a group needs its own (two producers with one id fence each
        other); a restarted member keeps its id, which aborts its predecessor's open
        transaction at once instead of after the transaction timeout."""
        if self.transactional_id:
            return self.transactional_id
        if self.instance_id:
            return f"{self.consumer_group}-{self.instance_id}-tx"
        return f"{self.consumer_group}-tx"

    @property
    def halo(self) -> float:
        """How far beyond its tiles a risk process sees vehicles (m)."""
        if self.halo_m is not None:
            return self.halo_m
        return DEFAULTS.max_speed_mps * self.engine.horizon_s + DEFAULTS.halo_margin_m

    @property
    def internal_name(self) -> str:
        """The topic between the stages: ``internal_topic``, else one per deployment,
        ``<group>-predicted-kinematics`` (two deployments sharing one would read each
        other's predictions and alert on them)."""
        return self.internal_topic or f"{self.group}-{PREDICTED_TOPIC}"

    @property
    def changelog_name(self) -> str | None:
        """The state changelog topic, or None without one (non-Kafka sources, disabled)."""
        if self.source != "kafka" or not self.changelog:
            return None
        return self.changelog_topic or f"{self.consumer_group}-changelog"

    def __post_init__(self) -> None:
        if self.predictor not in PREDICTORS:
            raise ConfigError(
                f"unknown predictor {self.predictor!r}: expected one of {', '.join(PREDICTORS)}"
            )
        if self.source == "kafka":
            if not self.bootstrap:
                raise ConfigError("the Kafka source needs --bootstrap HOST:PORT")
            if self.input_path:
                raise ConfigError("give either --input (file) or --bootstrap (Kafka), not both")
            if not self.positions_topic:
                raise ConfigError("--positions-topic must not be empty")
            if not self.group:
                raise ConfigError("--group must not be empty")
            if self.alerts_out or self.predictions_out or self.dlq_out:
                raise ConfigError(
                    "--alerts-out/--predictions-out/--dlq-out are for file input; with Kafka "
                    "use --alerts-topic/--predictions-topic/--dlq-topic"
                )
            topics = [t for t in (self.alerts_topic, self.predictions_topic, self.dlq_topic) if t]
            if self.stage != "all":
                topics.append(self.internal_name)
            if self.changelog_name:
                topics.append(self.changelog_name)
            if self.positions_topic in topics:
                raise ConfigError(
                    f"output topic {self.positions_topic!r} is also the positions topic"
                )
            if len(set(topics)) != len(topics):
                raise ConfigError(f"output topics must differ, got {topics}")
        elif self.source == "file":
            if not self.input_path:
                raise ConfigError("no source: give --bootstrap HOST:PORT or --input FILE.jsonl")
            if not self.alerts_out:
                raise ConfigError("file input needs --alerts-out FILE.jsonl (or - for stdout)")
            kafka_only = [flag for flag, value in (("--predictions-topic", self.predictions_topic),
                                                   ("--dlq-topic", self.dlq_topic),
                                                   ("--until-end", self.until_end)) if value]
            if kafka_only:
                # flags only: with a file source the Kafka variables are not read
                given = ", ".join(kafka_only)
                raise ConfigError(
                    f"{given} {'is' if len(kafka_only) == 1 else 'are'} for Kafka input; a "
                    "file is read to its end, its outputs are --predictions-out/--dlq-out")
            # files, not path strings: ./in.jsonl, a symlink or a hard link is the input too
            refuse_aliases({"--input": self.input_path},
                           {"--alerts-out": self.alerts_out,
                            "--predictions-out": self.predictions_out,
                            "--dlq-out": self.dlq_out})
        elif self.source != "memory":
            raise ConfigError(f"unknown source {self.source!r}")
        if self.stage not in STAGES:
            raise ConfigError(f"unknown stage {self.stage!r}: expected one of "
                              f"{', '.join(STAGES)}")
        if self.stage != "all" and self.source != "kafka":
            raise ConfigError(f"--stage {self.stage} runs on Kafka (--bootstrap): the stages "
                              f"talk through the {self.internal_name!r} topic")
        if self.stage == "risk" and self.predictions_topic:
            raise ConfigError("--predictions-topic belongs to the predict stage, not risk")
        _finite_pos("tile_m", float(self.tile_m))
        if self.halo_m is not None:
            _finite_pos("halo_m", float(self.halo_m), allow_zero=True)
        if self.exactly_once and self.source != "kafka":
            raise ConfigError("--exactly-once needs the Kafka source (--bootstrap)")
        if self.exactly_once and not self.changelog:
            raise ConfigError("--exactly-once needs the state changelog (drop --no-changelog)")
        if self.transactional_id and not self.exactly_once:
            raise ConfigError("--transactional-id is the id of --exactly-once's transactions: "
                              "give both or neither")
        if self.changelog_topic and not self.changelog:
            raise ConfigError("--changelog-topic names the changelog that --no-changelog "
                              "turns off: give one or the other")
        _finite_pos("max_stall_s", float(self.max_stall_s))
        if self.max_batch_records < 1:
            raise ConfigError(f"max_batch_records must be >= 1, got {self.max_batch_records}")
        if self.max_batch_wait_ms < 0:
            raise ConfigError(f"max_batch_wait_ms must be >= 0, got {self.max_batch_wait_ms}")
        _finite_pos("commit_interval_s", float(self.commit_interval_s), allow_zero=True)
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ConfigError(f"metrics port must be in 0..65535, got {self.metrics_port}")
        wanted = bool(self.predictions_topic or self.predictions_out)
        if wanted != self.engine.emit_predictions:
            object.__setattr__(self, "engine", replace(self.engine, emit_predictions=wanted))
