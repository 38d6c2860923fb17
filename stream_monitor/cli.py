"""The `stream-monitor` command: the composition root, and the only place that configures logging."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

import click
import orjson

from stream_monitor import __version__
from stream_monitor.config import Config, load_config
from stream_monitor.errors import StreamMonitorError
from stream_monitor.logs import SECRETS, configure_logging
from stream_monitor.secrets import secret_values

log = logging.getLogger("stream_monitor")


def stop_on_signals(announce: bool = False) -> threading.Event:
    """An event that SIGINT or SIGTERM sets: long-running commands finish their work and exit 0."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if announce:
            name = signal.Signals(signum).name
            log.info("signal %s received: finishing the batch, committing, stopping", name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


def replay_inputs(command: Callable[..., None]) -> Callable[..., None]:
    """--config, --predictions, --labels and --model, shared by replay, backtest and
    reference. Files are JSON Lines, CSV or Parquet (by their suffix)."""
    command = click.option(
        "--model",
        "default_model",
        help="The model of CSV or Parquet rows that have no model column.",
    )(command)
    command = click.option(
        "--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path)
    )(command)
    command = click.option(
        "--predictions",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        required=True,
    )(command)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False),
        help="YAML config.",
    )(command)


def pacing_options(command: Callable[..., None]) -> Callable[..., None]:
    """--events, --rate and --label-delay, shared by demo and simulate."""
    command = click.option(
        "--label-delay",
        default=5.0,
        show_default=True,
        help="Seconds from a prediction to its label.",
    )(command)
    command = click.option(
        "--rate", default=120.0, show_default=True, help="Predictions per second, all models."
    )(command)
    return click.option("--events", default=2400, show_default=True, help="Predictions per model.")(
        command
    )


def _load(path: str | None) -> Config:
    try:
        config = load_config(path)
    except StreamMonitorError as exc:
        raise click.ClickException(f"config error: {exc}") from exc
    # From here on no log line may show them, whatever prints them.
    SECRETS.add(*secret_values(config.kafka.model_dump()))
    signing_key = config.signing_key()
    if signing_key:
        SECRETS.add(signing_key.decode())
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stream-monitor")
@click.option(
    "--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR."
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line, with the key=value fields lifted out.",
)
def main(log_level: str, log_format: str) -> None:
    """Watch ML models in production: drift and performance alerts from Kafka events."""
    configure_logging(log_level, log_format)


@main.command()
@replay_inputs
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Alerts file (default stdout).",
)
@click.option("--pretty", is_flag=True, help="One readable line per alert instead of JSON.")
def replay(
    config_path: str | None,
    predictions: Path,
    labels: Path | None,
    default_model: str | None,
    output: Path | None,
    pretty: bool,
) -> None:
    """Run the monitor offline over files of events; print one alert (CloudEvents JSON) per line."""
    from stream_monitor.collector import tune_for_streaming
    from stream_monitor.replay import replay as run_replay

    tune_for_streaming()
    config = _load(config_path)
    handle: IO[bytes] = output.open("wb") if output else sys.stdout.buffer
    if pretty:
        handle = _PrettyAlerts(handle)  # type: ignore[assignment]
    try:
        summary = run_replay(config, predictions, labels, handle, model=default_model)
    finally:
        if output:
            handle.close()
        else:
            handle.flush()
    by_model = ", ".join(
        f"{model}: {count}" for model, count in sorted(summary.alerts_by_model.items())
    )
    joins = summary.joins
    click.echo(
        f"replayed {summary.events['prediction']} predictions and {summary.events['label']} labels; "
        f"{joins.get('matched', 0)} joined; {summary.bad_lines} bad lines skipped; "
        f"{summary.alerts} alerts"
        + (f" ({by_model})" if by_model else "")
        + (f"; {summary.resolved} resolved" if summary.resolved else ""),
        err=True,
    )


class _PrettyAlerts:
    """A write-only stream that turns alert JSON lines into readable lines."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner

    def write(self, line: bytes) -> int:
        from stream_monitor.core.alerts import describe

        return self.inner.write(describe(orjson.loads(line)).encode() + b"\n")

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


@main.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default="sample",
    show_default=True,
)
@click.option("--scenario", default="default", show_default=True, help="default or stable.")
@click.option("--events", default=6000, show_default=True, help="Predictions per model.")
@click.option("--seed", default=7, show_default=True)
def sample(out_dir: Path, scenario: str, events: int, seed: int) -> None:
    """Write a seeded sample (predictions.jsonl, labels.jsonl) with drift injected at known points."""
    from stream_monitor.scenarios import generate

    try:
        generated = generate(scenario, events=events, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("predictions", generated.predictions), ("labels", generated.labels)):
        with (out_dir / f"{name}.jsonl").open("wb") as handle:
            for row in rows:
                handle.write(orjson.dumps(row) + b"\n")
    with (out_dir / "truth.jsonl").open("wb") as handle:  # for `backtest --truth`
        for model, index in generated.change_points.items():
            handle.write(orjson.dumps({"model": model, "index": index}) + b"\n")
    changes = ", ".join(
        f"{model} at event {index}" if index is not None else f"{model} stable"
        for model, index in generated.change_points.items()
    )
    click.echo(
        f"wrote {len(generated.predictions)} predictions and {len(generated.labels)} labels to {out_dir}/ ({changes})",
        err=True,
    )


@main.command()
@pacing_options
@click.option("--seed", default=7, show_default=True)
def demo(events: int, rate: float, label_delay: float, seed: int) -> None:
    """Everything on this machine: embedded Kafka, simulated models with drift, the monitor, live alerts."""

    from rich.console import Console

    from stream_monitor.demo import Demo, summary_table
    from stream_monitor.simulate import SimulationPlan

    if events < 100 or rate <= 0:
        raise click.BadParameter("--events must be at least 100 and --rate positive")
    logging.getLogger("stream_monitor").setLevel(logging.WARNING)  # the live view tells the story
    stop = stop_on_signals()
    console = Console()
    plan = SimulationPlan(events=events, rate=rate, seed=seed, label_delay=label_delay)
    try:
        summary = Demo(plan, console, stop).run()
    except StreamMonitorError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print()
    console.print(summary_table(summary))
    state = "finished" if summary.completed else "stopped early"
    resolved = f" ({summary.resolved} resolved)" if summary.resolved else ""
    console.print(
        f"{state} in {summary.seconds:.0f}s: {summary.predictions:,} predictions and {summary.labels:,} labels "
        f"published, {summary.processed:,} events processed, {summary.detected} alerts{resolved}, "
        f"{summary.dead_letters} dead letters."
    )
    console.print(
        "Next: point it at your Kafka with `stream-monitor run --config configs/example.yaml "
        "--bootstrap-servers HOST:9092`, and watch alerts with `stream-monitor tail`."
    )


@main.command()
@click.option("--bootstrap-servers", default="127.0.0.1:9092", show_default=True)
@click.option("--scenario", default="default", show_default=True, help="See --list.")
@pacing_options
@click.option("--seed", default=7, show_default=True)
@click.option("--predictions-topic", default="predictions", show_default=True)
@click.option("--labels-topic", default="labels", show_default=True)
@click.option("--list", "list_scenarios", is_flag=True, help="List the scenarios and exit.")
def simulate(
    bootstrap_servers: str,
    scenario: str,
    events: int,
    rate: float,
    label_delay: float,
    seed: int,
    predictions_topic: str,
    labels_topic: str,
    list_scenarios: bool,
) -> None:
    """Publish a seeded scenario's predictions and delayed labels to Kafka at a steady pace."""

    from stream_monitor.scenarios import SCENARIOS
    from stream_monitor.simulate import SimulationPlan, Simulator, scenario_list

    if list_scenarios:
        for name, description in scenario_list():
            click.echo(f"{name:10} {description}")
        return
    if scenario not in SCENARIOS:
        raise click.BadParameter(
            f"unknown scenario {scenario!r} (see --list)", param_hint="--scenario"
        )
    if events < 1 or rate <= 0:
        raise click.BadParameter("--events must be at least 1 and --rate positive")
    stop = stop_on_signals()
    plan = SimulationPlan(
        scenario=scenario, events=events, rate=rate, seed=seed, label_delay=label_delay
    )
    simulator = Simulator(
        plan,
        bootstrap_servers,
        predictions_topic=predictions_topic,
        labels_topic=labels_topic,
        stop=stop,
    )
    click.echo(
        f"publishing {scenario}: {events} predictions per model at {rate:g}/s (about {plan.duration:.0f}s)",
        err=True,
    )
    try:
        progress = simulator.run()
    except StreamMonitorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{'done' if progress.done else 'stopped'}: {progress.predictions} predictions, {progress.labels} labels",
        err=True,
    )


@main.command()
@click.option("--bootstrap-servers", default="127.0.0.1:9092", show_default=True)
@click.option(
    "--topic", default="alerts", show_default=True, help="alerts, or the dead-letter topic."
)
@click.option(
    "--from-beginning", is_flag=True, help="Start at the oldest record instead of the end."
)
@click.option(
    "--follow/--no-follow", default=True, show_default=True, help="Keep waiting for new records."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Raw JSON lines (dead letters: headers and value)."
)
@click.option("--max", "max_messages", type=int, help="Stop after N records.")
@click.option("--timeout", type=float, help="Stop after S seconds.")
@click.option("--model", help="Only this model's records.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="For kafka.client settings.",
)
def tail(
    bootstrap_servers: str,
    topic: str,
    from_beginning: bool,
    follow: bool,
    as_json: bool,
    max_messages: int | None,
    timeout: float | None,
    model: str | None,
    config_path: str | None,
) -> None:
    """Show alerts (or dead letters, with their reasons) as they are committed."""

    from stream_monitor.tail import TailOptions, as_text, messages
    from stream_monitor.tail import as_json as to_json

    client = _load(config_path).kafka.client if config_path else None
    stop = stop_on_signals()
    options = TailOptions(
        bootstrap_servers,
        topic=topic,
        from_beginning=from_beginning,
        follow=follow,
        max_messages=max_messages,
        timeout=timeout,
        model=model,
        client=client,
        stop=stop,
    )
    out = sys.stdout
    try:
        for message in messages(options):
            if as_json:
                out.write(to_json(message).decode() + "\n")
            else:
                out.write(as_text(message) + "\n")
            out.flush()
    except StreamMonitorError as exc:
        raise click.ClickException(str(exc)) from exc


def _with_bootstrap(config: Config, bootstrap_servers: str | None) -> Config:
    if not bootstrap_servers:
        return config
    kafka = config.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
    return config.model_copy(update={"kafka": kafka})


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9092, show_default=True, type=int)
def broker(host: str, port: int) -> None:
    """Run the embedded Kafka-compatible broker (in memory) until Ctrl-C / SIGTERM."""

    from stream_monitor.embedded import EmbeddedBroker

    embedded = EmbeddedBroker(host, port, quiet=False)
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()
        embedded.terminate()  # the wait() below returns once the broker has exited

    # Before starting: a SIGTERM that comes while the broker starts is a clean stop too.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        embedded.start()
    except StreamMonitorError as exc:
        if stopping.is_set():
            return
        raise click.ClickException(str(exc)) from exc
    if not stopping.is_set():
        click.echo(
            f"broker listening on {embedded.bootstrap_servers} (in memory; Ctrl-C stops it)",
            err=True,
        )
        embedded.wait()
    embedded.stop()


@main.group()
def topics() -> None:
    """Manage the monitor's topics."""


@topics.command("create")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--bootstrap-servers", help="Overrides kafka.bootstrap_servers.")
def topics_create(config_path: str | None, bootstrap_servers: str | None) -> None:
    """Create input, alert, dead-letter and internal topics (idempotent)."""
    from confluent_kafka.admin import AdminClient

    from stream_monitor.kafka.settings import admin_settings
    from stream_monitor.kafka.topics import ensure_topics

    config = _with_bootstrap(_load(config_path), bootstrap_servers)
    try:
        outcome = ensure_topics(AdminClient(admin_settings(config)), config)
    except StreamMonitorError as exc:
        raise click.ClickException(str(exc)) from exc
    for name, state in sorted(outcome.items()):
        click.echo(f"{state:8} {name}")


@main.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--bootstrap-servers", help="Overrides kafka.bootstrap_servers.")
@click.option("--instance-id", help="Overrides kafka.instance_id (stable per instance).")
@click.option(
    "--engine",
    type=click.Choice(["confluent-kafka", "faust"]),
    default="confluent-kafka",
    show_default=True,
    help="Runtime: the confluent-kafka service, or a Faust worker (at least once; docs/faust.md).",
)
@click.option("--metrics-port", type=int, help="Overrides metrics.port (0: any free port, logged).")
@click.option("--metrics-host", help="Overrides metrics.host (default 127.0.0.1).")
def run(
    config_path: str | None,
    bootstrap_servers: str | None,
    instance_id: str | None,
    engine: str,
    metrics_port: int | None,
    metrics_host: str | None,
) -> None:
    """Run the monitor service on Kafka until SIGTERM/SIGINT."""

    from confluent_kafka.admin import AdminClient

    from stream_monitor.core.state import StateCodec
    from stream_monitor.kafka import FencedError
    from stream_monitor.kafka.service import MonitorService
    from stream_monitor.kafka.settings import admin_settings
    from stream_monitor.kafka.topics import ensure_topics, wait_for_broker
    from stream_monitor.statekey import resolve_signing_key

    config = _with_bootstrap(_load(config_path), bootstrap_servers)
    if instance_id:
        config = config.model_copy(
            update={"kafka": config.kafka.model_copy(update={"instance_id": instance_id})}
        )
    overrides = {"port": metrics_port, "host": metrics_host}
    if any(value is not None for value in overrides.values()):
        metrics = config.metrics.model_copy(
            update={key: value for key, value in overrides.items() if value is not None}
        )
        config = config.model_copy(update={"metrics": metrics})
    if engine == "faust":
        _run_faust(config)
        return
    stop = stop_on_signals(announce=True)
    try:
        service = MonitorService(config, codec=StateCodec(resolve_signing_key(config)), stop=stop)
        with _probes(config, service, host=config.metrics.host, port=config.metrics.port):
            admin = AdminClient(admin_settings(config))
            wait_for_broker(admin, config, stop)
            ensure_topics(admin, config)
            service.run()
    except FencedError as exc:
        log.error("%s", exc)
        sys.exit(3)
    except StreamMonitorError as exc:
        log.error("stopping: %s", exc)
        sys.exit(1)
    except Exception:
        # A bug, not a condition we handle: nothing unfinished was committed (the service
        # aborts), so a restart processes that input again. Say where, and exit non-zero.
        log.exception("stopping: unexpected error; nothing after the last commit was committed")
        sys.exit(1)
    counters = service.counters
    log.info(
        "stopped cleanly consumed=%d alerts=%d dead_letters=%d commits=%d",
        counters.consumed,
        counters.alerts,
        counters.dead_letters,
        counters.commits,
    )


@main.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--bootstrap-servers", help="Overrides kafka.bootstrap_servers.")
@click.option("--metrics-port", type=int, help="Overrides forward.metrics_port (0: any free port).")
@click.option("--metrics-host", help="Overrides forward.metrics_host (default 127.0.0.1).")
def forward(
    config_path: str | None,
    bootstrap_servers: str | None,
    metrics_port: int | None,
    metrics_host: str | None,
) -> None:
    """Deliver alerts to Alertmanager and webhooks (at least once) until SIGTERM/SIGINT."""
    from confluent_kafka.admin import AdminClient

    from stream_monitor.forward.clients import ensure_dead_letter_topic
    from stream_monitor.forward.http import basic_authorization
    from stream_monitor.forward.service import ForwardService
    from stream_monitor.kafka.settings import admin_settings
    from stream_monitor.kafka.topics import wait_for_broker
    from stream_monitor.secrets import url_secrets

    config = _with_bootstrap(_load(config_path), bootstrap_servers)
    settings = config.forward
    SECRETS.add(*secret_values(settings.model_dump()))
    sinks = ([settings.alertmanager] if settings.alertmanager else []) + list(settings.webhooks)
    for sink in sinks:
        SECRETS.add(*url_secrets(sink.url), *sink.headers.values())
        authorization = basic_authorization(sink.url)
        if authorization is not None:
            SECRETS.add(authorization, authorization.split()[1])
    overrides = {"metrics_port": metrics_port, "metrics_host": metrics_host}
    settings = settings.model_copy(
        update={key: value for key, value in overrides.items() if value is not None}
    )
    config = config.model_copy(update={"forward": settings})
    stop = stop_on_signals(announce=True)
    try:
        service = ForwardService(config, stop=stop)
        with _probes(config, service, host=settings.metrics_host, port=settings.metrics_port):
            admin = AdminClient(admin_settings(config))
            wait_for_broker(admin, config, stop)
            ensure_dead_letter_topic(admin, config)
            service.run()
    except StreamMonitorError as exc:
        log.error("stopping: %s", exc)
        sys.exit(1)
    except Exception:
        # A bug: what every sink took is committed (dead letters first); the rest is read
        # again by the next start. Say where, and exit non-zero.
        log.exception("stopping: unexpected error; alerts after the last commit are re-read")
        sys.exit(1)
    log.info("stopped cleanly")


class _Probed(Protocol):
    """A long-running service: its metrics and the answers of its two probes."""

    @property
    def metrics(self) -> Any: ...

    def liveness(self) -> tuple[bool, dict[str, Any]]: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...


def _probes(
    config: Config, service: _Probed, *, host: str, port: int
) -> contextlib.AbstractContextManager[object]:
    """`/metrics`, `/healthz` and `/readyz` of `run` and `forward` while the service runs; none
    when `metrics.enabled` is false."""
    from stream_monitor.health import HealthServer

    if not config.metrics.enabled:
        return contextlib.nullcontext()
    return HealthServer(
        service.metrics.registry,
        liveness=service.liveness,
        readiness=service.readiness,
        host=host,
        port=port,
    )


def _run_faust(config: Config) -> None:
    """`run --engine faust`: create the topics, then hand over to a Faust worker."""
    from confluent_kafka.admin import AdminClient

    from stream_monitor.core.state import StateCodec
    from stream_monitor.faust_runtime import run_worker
    from stream_monitor.kafka.settings import admin_settings
    from stream_monitor.kafka.topics import ensure_topics, wait_for_broker
    from stream_monitor.statekey import resolve_signing_key

    try:
        admin = AdminClient(admin_settings(config))
        wait_for_broker(admin, config)
        ensure_topics(admin, config)
        monitor = run_worker(
            config,
            codec=StateCodec(resolve_signing_key(config)),
            loglevel=logging.getLevelName(logging.getLogger().level),
        )
    except StreamMonitorError as exc:
        log.error("stopping: %s", exc)
        sys.exit(1)
    counters = monitor.counters
    log.info(
        "stopped cleanly consumed=%d alerts=%d dead_letters=%d batches=%d",
        counters.consumed,
        counters.alerts,
        counters.dead_letters,
        counters.commits,
    )


@main.command("check-config")
@click.argument("config_path", type=click.Path(exists=True, dir_okay=False))
def check_config(config_path: str) -> None:
    """Validate a config file and print it with secrets redacted."""
    config = _load(config_path)
    click.echo(orjson.dumps(redacted(config), option=orjson.OPT_INDENT_2).decode())


def redacted(config: Config) -> dict[str, object]:
    """The config as data, with every secret-looking value replaced by '***'."""
    from stream_monitor.secrets import redact

    return redact(config.model_dump(mode="json"))  # type: ignore[no-any-return]


@main.command()
@replay_inputs
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='Change points, JSON Lines of {"model": ..., "index": ...} (as `sample` writes).',
)
@click.option(
    "--max-delay", type=click.IntRange(min=1), help="Detections later than this are misses."
)
@click.option(
    "--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), required=True
)
def backtest(
    config_path: str | None,
    predictions: Path,
    labels: Path | None,
    default_model: str | None,
    truth: Path | None,
    max_delay: int | None,
    report_dir: Path,
) -> None:
    """Replay files through the monitor and write a report: plots, alerts and truth scores."""
    from stream_monitor.backtest import run_backtest, write_report

    config = _load(config_path)
    try:
        result = run_backtest(config, predictions, labels, truth, max_delay, default_model)
    except StreamMonitorError as exc:
        raise click.ClickException(str(exc)) from exc
    write_report(result, report_dir)
    line = f"{result.detected} alerts over {len(result.series)} signals"
    if result.resolved:
        line += f" ({result.resolved} resolved)"
    if result.score is not None:
        summary = result.score.summary()
        line += (
            f"; {summary['true_positives']} true positives, {summary['false_positives']} false "
            f"positives, {summary['misses']} misses, mean delay {summary['mean_delay']}"
        )
    click.echo(f"{line}; report in {report_dir / 'index.html'}", err=True)


@main.command()
@replay_inputs
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The reference file to write (JSON).",
)
def reference(
    config_path: str | None,
    predictions: Path,
    labels: Path | None,
    default_model: str | None,
    output: Path,
) -> None:
    """Build a reference from a sample of known-good events (training data): per model × signal
    statistics that detection compares with from the first event (config key `reference`)."""
    from stream_monitor.references import build_reference, write_reference

    config = _load(config_path)
    try:
        data = build_reference(config, predictions, labels, default_model)
    except StreamMonitorError as exc:
        raise click.ClickException(str(exc)) from exc
    models = data["models"]
    if not models:
        raise click.ClickException(
            f"no event of {predictions} is of a model the config monitors: nothing to write"
        )
    write_reference(data, output)
    for model, entry in models.items():
        kinds = entry["features"].values()
        click.echo(
            f"{model}: {entry['events']:,} predictions, {len(entry['signals'])} signals, "
            f"{len(kinds)} features ({sum(kind == 'categorical' for kind in kinds)} categorical)",
            err=True,
        )
    click.echo(
        f"wrote {output}; point the config at it with `reference: {output}` "
        "(or models[].reference)",
        err=True,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
