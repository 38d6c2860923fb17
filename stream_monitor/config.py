"""Configuration: pydantic models, loaded from YAML plus environment overrides, validated once.

Every error names the offending key (e.g. `join.ttl: ...`), and unknown keys are rejected, so a typo
fails at start-up instead of silently doing nothing.

Environment overrides: `STREAM_MONITOR__KAFKA__BOOTSTRAP_SERVERS=host:9092` sets
`kafka.bootstrap_servers`; values are parsed as YAML scalars. `STREAM_MONITOR_STATE_KEY` sets the
state signing key.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stream_monitor.core.calibration import DEFAULT_CLIP, DEFAULT_WARMUP, Calibration
from stream_monitor.core.detectors import DetectorRule
from stream_monitor.core.reference import InvalidReference, ModelReference, ReferenceSet
from stream_monitor.core.reference import parse as parse_reference
from stream_monitor.core.settings import (
    DEFAULT_DETECTORS,
    DEFAULT_MIN_EFFECT,
    DEFAULT_RESOLVE_MARGIN,
    DEFAULT_SIGNALS,
    Limits,
    ModelSettings,
    MonitorSettings,
)
from stream_monitor.errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "STREAM_MONITOR__"
SIGNAL_KINDS = ("performance", "prediction", "feature", "data_quality")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(value: object) -> int | None:
    """'7d', '12h', '30m', '45s', '200ms' or a number of seconds -> milliseconds; None/'none' -> None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off", "")):
        return None
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '7d', '12h', '30m', '45s' or '200ms'")
    if isinstance(value, (int, float)):
        return int(value * 1000)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(
            f"{value!r} is not a duration such as '7d', '12h', '30m', '45s' or '200ms'"
        )
    return int(float(match.group(1)) * _UNIT_MS[match.group(2) or "s"])


DurationMs = Annotated[int | None, BeforeValidator(parse_duration_ms)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrateSpec(_Strict):
    """Standardise each key×signal and derive the detector's parameters from a false-alarm budget.

    See docs/detection-quality.md for the method and its assumptions.
    """

    # values per key×signal that set its reference (a 0/1 series: until it saw 10 of each value)
    warmup: int = Field(default=DEFAULT_WARMUP, ge=2)
    arl0: float = Field(default=100_000, ge=1)  # mean events between false alarms, per key
    family_size: int = Field(default=10, ge=1)  # series per key sharing that budget
    shift: float = Field(default=1.0, gt=0)  # mean shift, in sd, to detect fastest
    # Page-Hinkley on a 0/1 series: the relative change of its rarer outcome's rate to detect
    # fastest (0.4: × 1.4 or × 0.6), instead of `shift`.
    rate_change: float | None = Field(default=None, gt=0)
    # Which series this rule watches: "continuous", "binary" (0/1) or "any" (it goes dormant
    # on the other kind after the warm-up), or "categorical": a categorical feature's distance
    # from its reference (only such rules watch categorical features).
    series: Literal["any", "continuous", "binary", "categorical"] = "any"
    statistic: Literal["mean", "spread"] = "mean"  # spread: the variance, with adwin only
    # Standardised values beyond ±clip count as ±clip (continuous series; null: no clipping).
    clip: float | None = Field(default=DEFAULT_CLIP, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _reference_moved(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and "reference" in value:
            raise ValueError(
                "reference: references are per model now, for every rule: set the top-level "
                "`reference:` (or models[].reference) to a file written by `stream-monitor "
                "reference` or `backtest` (docs/detection-quality.md, References)"
            )
        return value

    def calibration(self) -> Calibration:
        return Calibration(
            warmup=self.warmup,
            arl0=self.arl0,
            family_size=self.family_size,
            shift=self.shift,
            rate_change=self.rate_change,
            series=self.series,
            statistic=self.statistic,
            clip=self.clip,
        )


def read_reference(path: Path, where: str) -> ReferenceSet:
    """A reference file, validated; its digest is logged, so a run says what it compared with."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from exc
    try:
        references = parse_reference(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{where}: {path} is not JSON: {exc}") from exc
    except InvalidReference as exc:
        raise ConfigError(f"{where}: {path}: {exc}") from exc
    log.info(
        "reference file=%s sha256=%s models=%s",
        path,
        hashlib.sha256(raw).hexdigest(),
        ",".join(f"{name}:{entry.digest}" for name, entry in sorted(references.models.items())),
    )
    return references


class DetectorSpec(_Strict):
    """A detector rule: a river detector type and any of its constructor parameters."""

    type: Literal["adwin", "page_hinkley"]
    params: dict[str, Any] = Field(default_factory=dict)
    calibrate: CalibrateSpec | None = None

    def rule(self, name: str) -> DetectorRule:
        calibration = self.calibrate.calibration() if self.calibrate is not None else None
        return DetectorRule(name, self.type, self.params, calibration)


class SignalRules(_Strict):
    """Detector rule names per signal kind. None inherits (top level: the built-in defaults; a
    model rule: the top level's); an empty list switches the kind off."""

    performance: list[str] | None = None
    prediction: list[str] | None = None
    feature: list[str] | None = None
    data_quality: list[str] | None = None


class FeatureSelection(_Strict):
    include: list[str] = Field(default_factory=list)  # empty: every feature
    exclude: list[str] = Field(default_factory=list)


class ModelRule(_Strict):
    """Settings for the models whose name matches `match` (a glob). The first match wins."""

    match: str = "*"
    task: Literal["auto", "classification", "regression"] = "auto"
    positive_class: str | int | bool | None = None
    features: FeatureSelection = Field(default_factory=FeatureSelection)
    signals: SignalRules = Field(default_factory=SignalRules)
    # Per signal name ("error", "score", "tenure", "missing_rate:tenure", ...): its own rules.
    overrides: dict[str, list[str]] = Field(default_factory=dict)
    # A reference file for these models (`stream-monitor reference`); it wins over the
    # top-level `reference` for the models it has.
    reference: str | None = None


class KeyBy(_Strict):
    """What splits monitoring beyond the model: its version and/or segment fields."""

    model_version: bool = False
    segment: list[str] = Field(default_factory=list)


class ResolveConfig(_Strict):
    """When an alerted signal is back at its pre-change level, publish `drift_resolved`."""

    enabled: bool = True
    # Back means within this fraction of the alerted shift from the pre-change level (0.25: it
    # came three quarters of the way back); a signal between that and its alerted level stays
    # alerted, so it does not flap. The evidence needed is set for about one false resolve per
    # 1e6 values of a signal still at its alerted level (core/lifecycle.py).
    margin: float = Field(default=DEFAULT_RESOLVE_MARGIN, gt=0, lt=1)


class AlertsConfig(_Strict):
    source: str = "stream-monitor"
    # After an alert, the same detector on the same key stays quiet for this many observations.
    cooldown: int = Field(default=1000, ge=0)
    # Detections whose effect size is below this are not alerted (counted in
    # stream_monitor_detections_negligible_total): standard deviations for a mean, |log2| of
    # the ratio of a 0/1 rate's rarer outcome (1 = doubled or halved) or of a spread's sd.
    min_effect: float = Field(default=DEFAULT_MIN_EFFECT, ge=0)
    resolve: ResolveConfig = Field(default_factory=ResolveConfig)
    max_likely_causes: int = Field(default=5, ge=0)
    # A feature "moved" when its recent mean is this many standard deviations from its baseline.
    likely_cause_min_shift: float = Field(default=0.5, ge=0)


class JoinConfig(_Strict):
    ttl: DurationMs = Field(default=7 * 86_400_000)
    max_pending_predictions: int = Field(default=1_000_000, ge=1)
    max_pending_labels: int = Field(default=100_000, ge=1)


class EventsConfig(_Strict):
    max_bytes: int = Field(default=1_048_576, ge=64)


class LimitsConfig(_Strict):
    """Bounds on what one input partition's monitor holds, whatever arrives (docs/operations.md).

    Past a bound nothing new is monitored; events still count, and each overflow is counted in
    `stream_monitor_overflow_total`.
    """

    max_models: int = Field(default=1_000, ge=1)  # models per input partition
    max_keys: int = Field(default=100_000, ge=1)  # monitor keys per input partition
    max_keys_per_model: int = Field(default=10_000, ge=1)  # versions × segments of one model
    max_features: int = Field(default=500, ge=0)  # features monitored per key
    max_feature_name: int = Field(default=256, ge=1)  # characters (also of a category value)
    # known categories per categorical feature; other values are pooled as "other" (unseen)
    max_categories: int = Field(default=32, ge=1, le=1000)


class StateConfig(_Strict):
    # HMAC key for state records read back from Kafka. Set it (or STREAM_MONITOR_STATE_KEY) to
    # the same secret on every instance of a consumer group.
    signing_key: SecretStr | None = None
    # A state record that does not verify (forged, moved, another key, an earlier version's
    # format): "stop" refuses to start and names the record; "skip" leaves it out, logs it and
    # counts it (stream_monitor_state_records_rejected_total), restoring what verifies.
    on_invalid_record: Literal["stop", "skip"] = "stop"
    # How often the confluent-kafka runtime writes state to the changelog (whichever comes
    # first). Outputs are committed more often (kafka.commit_interval); after a crash, the input
    # processed since the last state checkpoint is processed again, without publishing its outputs
    # twice: these bound that work, and the changelog's write rate.
    checkpoint_interval: DurationMs = Field(default=2_000)
    checkpoint_max_events: int = Field(default=50_000, ge=1)


class TopicsConfig(_Strict):
    predictions: str = "predictions"
    labels: str = "labels"
    alerts: str = "alerts"
    dead_letters: str = "dead-letters"


class KafkaConfig(_Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "stream-monitor"
    # Stable per instance: the transactional.id and client.id derive from it.
    instance_id: str | None = None
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    partitioning: Literal["by_model", "repartition"] = "by_model"
    # Alerts become visible to read_committed readers at a commit: 100 ms keeps alert latency low
    # (Kafka Streams uses the same default under exactly-once).
    commit_interval: DurationMs = Field(default=100)
    commit_max_events: int = Field(default=10_000, ge=1)
    # Exactly once: commit right after a batch that published an alert, not at the next interval.
    commit_on_alert: bool = True
    batch_size: int = Field(default=5_000, ge=1)
    # consume() waits this long for a full batch: it bounds how long a quiet stream is held back.
    poll_timeout: DurationMs = Field(default=20)
    session_timeout: DurationMs = Field(default=10_000)
    # "classic" (eager range assignment, any broker) or "consumer" (KIP-848, Apache Kafka 4.x:
    # incremental rebalances with the broker-side range assignor, which keeps partition p of both
    # input topics on one member). With "consumer", session_timeout and the heartbeat interval are
    # the broker's (group.consumer.session.timeout.ms, group.consumer.heartbeat.interval.ms).
    group_protocol: Literal["classic", "consumer"] = "classic"
    # Raw librdkafka settings passed to every client (security.protocol, sasl.*, ssl.*, ...).
    client: dict[str, Any] = Field(default_factory=dict)
    consumer: dict[str, Any] = Field(default_factory=dict)
    producer: dict[str, Any] = Field(default_factory=dict)
    on_broker_down: Literal["retry", "exit"] = "retry"
    broker_down_timeout: DurationMs = Field(default=60_000)
    # Read the state changelog while the consumer group join is pending (docs/benchmarks.md,
    # "Recovery"): faster restarts, at the price of holding every partition's state meanwhile.
    prefetch_state: bool = True
    # Static group membership (group.instance.id from group_id and instance_id): a restarted
    # instance takes its old place without a rebalance, but a stopped one keeps its partitions
    # unassigned until session_timeout passes. Needs a unique, stable instance_id per instance.
    static_membership: bool = False


class MetricsConfig(_Strict):
    """Prometheus `/metrics`, `/healthz` and `/readyz` on one small HTTP server."""

    enabled: bool = True
    # Loopback by default: expose it on purpose (0.0.0.0 in a container), not by accident.
    host: str = "127.0.0.1"
    port: int = Field(default=9650, ge=0, le=65535)  # 0: any free port, logged at start-up
    # Label caps: past them, models (and signals per model) are reported as "other".
    max_models: int = Field(default=50, ge=1)
    max_signals: int = Field(default=100, ge=1)
    # How often the detector gauges walk every key.
    state_interval: DurationMs = Field(default=10_000)
    # librdkafka statistics, the source of the consumer-lag gauge; null switches them off.
    statistics_interval: DurationMs = Field(default=5_000)
    # /healthz fails when the consume loop has not turned for this long (restores excepted).
    stall_timeout: DurationMs = Field(default=90_000)


# --- forward: alert delivery (`stream-monitor forward`, docs/forwarding.md) -------------------
def _http_url(value: str) -> str:
    """An http(s) URL with a host. The message never repeats the value: URLs can hold tokens."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


HttpUrl = Annotated[str, BeforeValidator(lambda value: _http_url(str(value)))]


def _required_duration_ms(value: object) -> int:
    parsed = parse_duration_ms(value)
    if parsed is None:
        raise ValueError("must be a duration such as '30s' or '10m' (none/off is not allowed here)")
    return parsed


# A duration that must be set: `none` would leave a timer the forwarder cannot run without.
RequiredDurationMs = Annotated[int, BeforeValidator(_required_duration_ms)]


class AlertmanagerForward(_Strict):
    """Alertmanager API v2: post each drift alert, re-post it while active, close it when resolved."""

    url: HttpUrl  # base URL, e.g. http://alertmanager:9093 (the forwarder adds /api/v2/alerts)
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. Authorization (redacted in logs)
    timeout: RequiredDurationMs = Field(default=5_000, gt=0)
    # Alertmanager's own global.resolve_timeout: an alert not re-posted within it is resolved.
    resolve_timeout: RequiredDurationMs = Field(default=300_000, gt=0)
    repeat_post: DurationMs = Field(default=None, gt=0)  # none: resolve_timeout / 2
    # An alert no drift_resolved event closes stops being re-posted this long after publication.
    active_for: RequiredDurationMs = Field(default=86_400_000, gt=0)
    max_active: int = Field(default=10_000, ge=1)

    @property
    def repeat_every_ms(self) -> int:
        """How often an active alert is posted again (`repeat_post`, else resolve_timeout / 2)."""
        return self.repeat_post if self.repeat_post is not None else self.resolve_timeout // 2

    @model_validator(mode="after")
    def _reposted_in_time(self) -> AlertmanagerForward:
        if self.repeat_every_ms >= self.resolve_timeout:
            raise ConfigError(
                f"forward.alertmanager.repeat_post: {self.repeat_every_ms} ms is not shorter than "
                f"resolve_timeout ({self.resolve_timeout} ms): Alertmanager would resolve active "
                "alerts between two posts"
            )
        return self


class WebhookForward(_Strict):
    """An HTTP endpoint that receives each alert: a CloudEvent, or Slack-compatible text."""

    url: HttpUrl
    name: str | None = None  # in logs, metrics and dead letters; default webhook-<index>
    headers: dict[str, str] = Field(default_factory=dict)
    format: Literal["cloudevents", "slack"] = "cloudevents"
    mode: Literal["structured", "binary"] = "structured"  # CloudEvents HTTP binding
    timeout: RequiredDurationMs = Field(default=5_000, gt=0)


class ForwardConfig(_Strict):
    """`stream-monitor forward`: reads the alerts topic in its own group, delivers to every sink."""

    group_id: str = "stream-monitor-forward"
    start_at: Literal["earliest", "latest"] = "earliest"  # a new group's first position
    # A new group (no committed offset) sends webhooks only the alerts published this long before
    # it started; older ones only rebuild Alertmanager's active set. none: the whole history.
    first_start_max_age: DurationMs = Field(default=3_600_000, gt=0)
    dead_letter_topic: str = "alert-dead-letters"
    # An alert a sink has not taken for this long goes to the dead-letter topic, for that sink.
    give_up_after: RequiredDurationMs = Field(default=600_000, gt=0)
    # First retry delay, doubled up to the max.
    retry_backoff: RequiredDurationMs = Field(default=500, gt=0)
    retry_backoff_max: RequiredDurationMs = Field(default=30_000, gt=0)
    commit_interval: RequiredDurationMs = Field(default=1_000, gt=0)
    max_pending: int = Field(default=10_000, ge=1)  # alerts held per sink before reading pauses
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9651, ge=0, le=65535)
    alertmanager: AlertmanagerForward | None = None
    webhooks: list[WebhookForward] = Field(default_factory=list)

    def sink_names(self) -> list[str]:
        names = ["alertmanager"] if self.alertmanager is not None else []
        names += [hook.name or f"webhook-{i}" for i, hook in enumerate(self.webhooks)]
        return names

    @model_validator(mode="after")
    def _unique_names(self) -> ForwardConfig:
        names = self.sink_names()
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ConfigError(f"forward.webhooks: two sinks are named {name!r}")
        sinks: list[tuple[str, AlertmanagerForward | WebhookForward]] = [
            (f"forward.webhooks[{index}]", hook) for index, hook in enumerate(self.webhooks)
        ]
        if self.alertmanager is not None:
            sinks.insert(0, ("forward.alertmanager", self.alertmanager))
        for where, sink in sinks:
            if "@" in (urlsplit(sink.url).netloc) and any(
                name.lower() == "authorization" for name in sink.headers
            ):
                raise ConfigError(
                    f"{where}.url: has credentials (sent as Basic authentication) and "
                    f"{where}.headers has an Authorization header: keep one of them"
                )
        if self.retry_backoff > self.retry_backoff_max:
            raise ConfigError(
                f"forward.retry_backoff: {self.retry_backoff} ms is longer than "
                f"retry_backoff_max ({self.retry_backoff_max} ms)"
            )
        return self


class Config(_Strict):
    # A reference file (`stream-monitor reference`): the models it has are compared with it
    # from their first event, without warm-ups. A relative path is read from the config file's
    # directory.
    reference: str | None = None
    # The built-in rules (core/settings.py: calibrated rate, mean and spread, and river's raw
    # adwin and page_hinkley), and the config's own: a rule of the same name replaces one.
    detectors: dict[str, DetectorSpec] = Field(
        default_factory=lambda: {
            name: DetectorSpec.model_validate(spec) for name, spec in DEFAULT_DETECTORS.items()
        }
    )
    signals: SignalRules = Field(
        default_factory=lambda: SignalRules(
            **{kind: list(names) for kind, names in DEFAULT_SIGNALS.items()}
        )
    )
    models: list[ModelRule] = Field(default_factory=lambda: [ModelRule()])
    key_by: KeyBy = Field(default_factory=KeyBy)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    join: JoinConfig = Field(default_factory=JoinConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    forward: ForwardConfig = Field(default_factory=ForwardConfig)
    # The parsed reference files: the top-level one, and each models[] rule's own.
    _references: tuple[ReferenceSet | None, list[ReferenceSet | None]] = PrivateAttr(
        default=(None, [])
    )

    @field_validator("detectors", mode="before")
    @classmethod
    def _with_builtins(cls, value: Any) -> Any:
        """The built-in rules stay available beside the config's own (which win by name)."""
        if isinstance(value, Mapping):
            return {**DEFAULT_DETECTORS, **value}
        return value

    @field_validator("detectors")
    @classmethod
    def _detectors_build(cls, value: dict[str, DetectorSpec]) -> dict[str, DetectorSpec]:
        for name, spec in value.items():
            spec.rule(name)  # raises ConfigError naming the key
        return value

    @model_validator(mode="after")
    def _rules_exist(self) -> Config:
        known = set(self.detectors)

        def check(where: str, names: list[str] | None) -> None:
            for name in names or []:
                if name not in known:
                    raise ConfigError(
                        f"{where}: unknown detector rule {name!r} (defined: {', '.join(sorted(known))})"
                    )

        for kind in SIGNAL_KINDS:
            check(f"signals.{kind}", getattr(self.signals, kind))
        for index, rule in enumerate(self.models):
            for kind in SIGNAL_KINDS:
                check(f"models[{index}].signals.{kind}", getattr(rule.signals, kind))
            for signal, names in rule.overrides.items():
                check(f"models[{index}].overrides.{signal}", names)
        self._say_what_categorical_features_get()
        return self

    def _say_what_categorical_features_get(self) -> None:
        """A feature rule list written before categorical features were watched (without
        `categories`) would leave them with their rates only: say so, once, at start-up."""
        lists = [("signals.feature", self.signals.feature)]
        lists += [
            (f"models[{index}].signals.feature", rule.signals.feature)
            for index, rule in enumerate(self.models)
        ]
        for where, names in lists:
            if names and not any(
                (spec := self.detectors[name].calibrate) is None or spec.series == "categorical"
                for name in names
            ):
                log.warning(
                    "%s (%s) has no rule for categorical features: they get their missing, "
                    "unseen and type-change rates only; add `categories` to watch their mix",
                    where,
                    ", ".join(names),
                )

    @model_validator(mode="after")
    def _read_references(self, info: ValidationInfo) -> Config:
        """Read and check every reference file once: each model of the top-level one must be
        monitored, each rule's own must have a model it matches, and a model's reference must
        have every feature its rule's `features.include` names."""
        base = Path((info.context or {}).get("base", "."))
        files: dict[str, ReferenceSet] = {}

        def read(path: str, where: str) -> ReferenceSet:
            if path not in files:
                files[path] = read_reference(base / path, where)
            return files[path]

        top = read(self.reference, "reference") if self.reference else None
        own: list[ReferenceSet | None] = []
        for index, rule in enumerate(self.models):
            where = f"models[{index}].reference"
            found = read(rule.reference, where) if rule.reference else None
            if found is not None and not any(
                fnmatch.fnmatchcase(model, rule.match) for model in found.models
            ):
                raise ConfigError(
                    f"{where}: {rule.reference} has no model that {rule.match!r} matches "
                    f"(it has {', '.join(sorted(found.models))})"
                )
            own.append(found)
        if top is not None:
            for model in top.models:
                if not any(fnmatch.fnmatchcase(model, rule.match) for rule in self.models):
                    raise ConfigError(
                        f"reference: {self.reference}: model {model!r} is not monitored "
                        "(no models[].match matches it)"
                    )
        for model, index, path, entry in self._model_references(top, own):
            rule = self.models[index]
            for feature in rule.features.include:
                if feature not in entry.types:
                    raise ConfigError(
                        f"{path}: model {model!r} has no signal 'feature/{feature}' "
                        f"(models[{index}].features.include names it)"
                    )
        self._references = (top, own)
        return self

    def _model_references(
        self, top: ReferenceSet | None, own: list[ReferenceSet | None]
    ) -> Iterator[tuple[str, int, str, ModelReference]]:
        """(model, index of its rule, the file's config key, its reference) for every model a
        reference file has and a rule monitors (its first matching rule's file, else the
        top-level one)."""
        models = {model for found in (top, *own) if found is not None for model in found.models}
        for model in sorted(models):
            for index, rule in enumerate(self.models):
                if not fnmatch.fnmatchcase(model, rule.match):
                    continue
                found = own[index]
                if found is not None and model in found.models:
                    yield (
                        model,
                        index,
                        f"models[{index}].reference: {rule.reference}",
                        found.models[model],
                    )
                elif top is not None and model in top.models:
                    yield model, index, f"reference: {self.reference}", top.models[model]
                break

    def detector_rules(self) -> dict[str, DetectorRule]:
        return {name: spec.rule(name) for name, spec in self.detectors.items()}

    def _kind_rules(self, kind: str) -> tuple[str, ...]:
        """A kind's rules: as the config names them, else the built-in defaults."""
        names: list[str] | None = getattr(self.signals, kind)
        return DEFAULT_SIGNALS[kind] if names is None else tuple(names)

    def monitor_settings(self) -> MonitorSettings:
        """The plain settings the core is built from (the core never reads this Config)."""
        return MonitorSettings(
            rules=self.detector_rules(),
            signals={kind: self._kind_rules(kind) for kind in SIGNAL_KINDS},
            models=tuple(
                ModelSettings(
                    match=rule.match,
                    task=rule.task,
                    positive_class=rule.positive_class,
                    include=tuple(rule.features.include),
                    exclude=tuple(rule.features.exclude),
                    signals={
                        kind: tuple(names)
                        for kind in SIGNAL_KINDS
                        if (names := getattr(rule.signals, kind)) is not None
                    },
                    overrides={name: tuple(rules) for name, rules in rule.overrides.items()},
                    reference=self._references[1][index],
                )
                for index, rule in enumerate(self.models)
            ),
            key_by_version=self.key_by.model_version,
            key_by_segment=tuple(self.key_by.segment),
            source=self.alerts.source,
            cooldown=self.alerts.cooldown,
            min_effect=self.alerts.min_effect,
            resolve=self.alerts.resolve.enabled,
            resolve_margin=self.alerts.resolve.margin,
            max_likely_causes=self.alerts.max_likely_causes,
            likely_cause_min_shift=self.alerts.likely_cause_min_shift,
            join_ttl_ms=self.join.ttl,
            max_pending_predictions=self.join.max_pending_predictions,
            max_pending_labels=self.join.max_pending_labels,
            max_event_bytes=self.events.max_bytes,
            limits=Limits(**self.limits.model_dump()),
            reference=self._references[0],
        )

    def signing_key(self) -> bytes | None:
        secret = self.state.signing_key
        return secret.get_secret_value().encode() if secret is not None else None


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not path:
            continue
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = yaml.safe_load(raw) if raw else raw
    key = environ.get("STREAM_MONITOR_STATE_KEY")
    if key:
        data.setdefault("state", {})
        if isinstance(data["state"], dict):
            data["state"]["signing_key"] = key
    return data


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        location = ".".join(
            f"[{part}]" if isinstance(part, int) else str(part) for part in error["loc"]
        ).replace(".[", "[")
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        lines.append(f"{location or '(top level)'}: {message}")
    return "; ".join(lines)


def build_config(
    data: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    base: Path | None = None,
) -> Config:
    """Validate a config mapping (plus env overrides) into a `Config`, or raise `ConfigError`.
    Relative reference paths are read from `base` (the config file's directory), else the
    working directory."""
    merged = _apply_env(dict(data or {}), os.environ if environ is None else environ)
    try:
        return Config.model_validate(merged, context={"base": base or Path(".")})
    except ValidationError as exc:
        # A ConfigError raised inside a validator arrives wrapped; surface its own message.
        for error in exc.errors():
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, ConfigError):
                raise cause from None
        raise ConfigError(_format_validation_error(exc)) from None
    except ConfigError:
        raise


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read a YAML config file (None: all defaults) and validate it."""
    data: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    return build_config(data, environ, Path(path).parent if path is not None else None)
