"""`stream-monitor demo`: the whole system on one machine, in about a minute.

An embedded broker, the topics, the monitor service (the same code as `run`), simulated producers
with drift injected half-way, and a live view: progress, then each alert as it is committed to the
alerts topic, then a summary. Ctrl-C stops everything cleanly at any moment.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from stream_monitor.config import build_config
from stream_monitor.core.alerts import RESOLVED_TYPE, describe_cause, describe_effect, level_unit
from stream_monitor.core.state import StateCodec
from stream_monitor.embedded import EmbeddedBroker
from stream_monitor.kafka.service import MonitorService
from stream_monitor.kafka.topics import ensure_topics
from stream_monitor.simulate import SimulationPlan, Simulator
from stream_monitor.tail import TailOptions, messages

SEVERITY_STYLE = {"critical": "bold red", "warning": "bold yellow", "info": "cyan"}


@dataclass
class DemoSummary:
    alerts: list[dict[str, Any]] = field(default_factory=list)
    predictions: int = 0
    labels: int = 0
    processed: int = 0
    joined: dict[str, int] = field(default_factory=dict)
    per_model: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    completed: bool = False
    seconds: float = 0.0

    @property
    def resolved(self) -> int:
        return sum(1 for alert in self.alerts if alert.get("type") == RESOLVED_TYPE)

    @property
    def detected(self) -> int:
        return len(self.alerts) - self.resolved


def _number(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}"


def alert_text(alert: dict[str, Any]) -> Text:
    data = alert["data"]
    if alert.get("type") == RESOLVED_TYPE:
        return resolved_text(data)
    stats = data["stats"]
    text = Text()
    text.append(f"{data['severity'].upper():8}", style=SEVERITY_STYLE.get(data["severity"], ""))
    text.append(f" {data['monitor_key']}", style="bold")
    text.append(f"  {data['signal_kind']}/{data['signal']}  ")
    effect = data.get("effect")
    if effect:
        text.append(describe_effect(effect), style="bold")
    else:
        after = (
            stats.get("mean_recent")
            if stats.get("mean_recent") is not None
            else stats["mean_after"]
        )
        text.append(f"{_number(stats['mean_before'])} -> {_number(after)}", style="bold")
    text.append(f"  ({data['rule']}, {data['observations']} observations)", style="dim")
    causes = data["likely_causes"]
    if causes:
        text.append("  likely causes: ")
        text.append(", ".join(describe_cause(cause) for cause in causes), style="magenta")
    return text


def resolved_text(data: dict[str, Any]) -> Text:
    level = data["level"]
    unit = level_unit(level)
    text = Text()
    text.append(f"{'RESOLVED':8}", style="bold green")
    text.append(f" {data['monitor_key']}", style="bold")
    text.append(f"  {data['signal_kind']}/{data['signal']}  ")
    text.append(f"back at {unit}{_number(level['now'])}", style="bold")
    text.append(f" (before {_number(level['before'])}, alerted {_number(level['alerted'])})")
    text.append(f"  ({data['rule']}, {data['open_for']} observations after the alert)", style="dim")
    return text


class Demo:
    def __init__(self, plan: SimulationPlan, console: Console, stop: threading.Event) -> None:
        self.plan = plan
        self.console = console
        self.stop = stop
        self.summary = DemoSummary()
        self.alerts: queue.Queue[dict[str, Any]] = queue.Queue()
        self.errors: list[BaseException] = []

    def _thread(self, name: str, target: Any) -> threading.Thread:
        def guarded() -> None:
            try:
                target()
            except BaseException as exc:
                self.errors.append(exc)
                self.stop.set()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        return thread

    def run(self) -> DemoSummary:
        started = time.monotonic()
        console = self.console
        console.print(Text("stream-monitor demo", style="bold"))
        console.print(
            "Three models publish predictions to Kafka; labels follow "
            f"{self.plan.label_delay:g}s later.\n"
            "  credit: a classifier whose accuracy drops half-way (only the delayed labels show it)\n"
            "  fraud:  a classifier whose input 'amount', its country mix (fr 20% -> 60%) and\n"
            "          its scores shift half-way\n"
            "  eta:    a regression model that stays healthy\n"
        )
        broker = EmbeddedBroker()
        try:
            with console.status("starting the embedded Kafka broker and the monitor..."):
                broker.start()
                config = build_config(
                    {
                        "kafka": {
                            "bootstrap_servers": broker.bootstrap_servers,
                            "group_id": "demo",
                            "instance_id": "demo",
                            "session_timeout": "6s",
                        }
                    },
                    environ={},
                )
                ensure_topics(AdminClient({"bootstrap.servers": broker.bootstrap_servers}), config)
                service = MonitorService(
                    config, codec=StateCodec(secrets.token_bytes(32)), stop=self.stop
                )
                service_thread = self._thread("monitor", service.run)
                while not service.ready.wait(0.1) and not self.stop.is_set():
                    pass
            simulator = Simulator(self.plan, broker.bootstrap_servers, stop=self.stop)
            total = len(simulator.scenario.predictions) + len(simulator.scenario.labels)
            if not self.stop.is_set():
                console.print(
                    f"[green]ready[/green]: broker on {broker.bootstrap_servers}, monitor consuming. "
                    f"Publishing {self.plan.events:,} predictions per model at {self.plan.rate:g}/s...\n"
                )
                self._thread("simulator", simulator.run)
                reader = self._thread("alerts", lambda: self._read_alerts(broker.bootstrap_servers))
                self._watch(service, simulator, total)
                self.stop.set()
                reader.join(10)
            self.stop.set()
            service_thread.join(30)
            self._collect(service, simulator)
        finally:
            self.stop.set()
            broker.stop()
        self.summary.seconds = time.monotonic() - started
        if self.errors:
            raise self.errors[0]
        return self.summary

    def _read_alerts(self, bootstrap: str) -> None:
        options = TailOptions(
            bootstrap, topic="alerts", from_beginning=True, follow=True, stop=self.stop
        )
        for message in messages(options):
            self.alerts.put(orjson.loads(message.value()))

    def _watch(self, service: MonitorService, simulator: Simulator, total: int) -> None:
        quiet_since: float | None = None
        with Live(
            self._progress(service, simulator),
            console=self.console,
            refresh_per_second=4,
            transient=True,
        ) as live:
            while not self.stop.is_set():
                while not self.alerts.empty():
                    alert = self.alerts.get()
                    self.summary.alerts.append(alert)
                    live.console.print(alert_text(alert))
                live.update(self._progress(service, simulator))
                finished = simulator.progress.done and service.counters.processed >= total
                if finished:
                    # Let the last commit land and its alerts arrive.
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 2.0 and self.alerts.empty():
                        self.summary.completed = True
                        return
                time.sleep(0.1)

    def _progress(self, service: MonitorService, simulator: Simulator) -> Table:
        produced = simulator.progress.predictions + simulator.progress.labels
        # Kept from the last tick: on a stop, the service releases its partitions (and state).
        self.summary.joined = self._joined(service) or self.summary.joined
        joined = sum(self.summary.joined.values())
        table = Table.grid(padding=(0, 2))
        table.add_row(
            Text(
                f"produced {simulator.progress.predictions:,} predictions, {simulator.progress.labels:,} labels"
            ),
            Text(f"consumed {service.counters.consumed:,}"),
            Text(f"labels joined {joined:,}"),
            Text(f"lag {max(produced - service.counters.processed, 0):,}"),
            Text(f"alerts {self.summary.detected}", style="bold"),
        )
        return table

    @staticmethod
    def _joined(service: MonitorService) -> dict[str, int]:
        joined: dict[str, int] = {}
        for processor in list(service.processors.values()):
            for key, state in list(processor.monitor.keys.items()):
                if state.performance is not None and state.performance.tracks:
                    joined[key] = max(track.observed for track in state.performance.tracks)
        return joined

    def _collect(self, service: MonitorService, simulator: Simulator) -> None:
        while not self.alerts.empty():
            self.summary.alerts.append(self.alerts.get())
        self.summary.predictions = simulator.progress.predictions
        self.summary.labels = simulator.progress.labels
        self.summary.processed = service.counters.processed
        self.summary.dead_letters = service.counters.dead_letters
        self.summary.per_model = dict(simulator.progress.per_model)


def summary_table(summary: DemoSummary) -> Table:
    table = Table(title="Summary", title_justify="left")
    table.add_column("model")
    table.add_column("predictions", justify="right")
    table.add_column("labels joined", justify="right")
    table.add_column("alerts")
    per_model = summary.per_model
    resolved = {a["data"]["resolves"] for a in summary.alerts if a.get("type") == RESOLVED_TYPE}
    for model in sorted(per_model):
        found = [
            a
            for a in summary.alerts
            if a["data"]["model"] == model and a.get("type") != RESOLVED_TYPE
        ]
        table.add_row(
            model,
            f"{per_model[model]:,}",
            f"{summary.joined.get(model, 0):,}",
            ", ".join(
                f"{a['data']['signal_kind']}/{a['data']['signal']} ({a['data']['severity']}"
                + (", resolved)" if a["id"] in resolved else ")")
                for a in found
            )
            or "none",
        )
    return table
