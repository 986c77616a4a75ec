"""The remote_write sink against real receivers: Debian's Prometheus (remote-write receiver)
and VictoriaMetrics, started by the tests. The collector runs as a real process with the CSV
and remote_write sinks; every sample of the CSV files must be stored once, at its tick time,
with its value, under the series name ``/metrics`` uses."""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from system_info_collector.config import RemoteWriteSettings
from system_info_collector.errors import TransientSinkError
from system_info_collector.http import host_metric_name
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.schema import MEASUREMENTS
from system_info_collector.sinks.remote_write import RemoteWriteSink
from tests.helpers import clean_env, poll
from tests.integration.conftest import Collector
from tests.integration.receivers import (
    VICTORIA,
    PrometheusReceiver,
    Receiver,
    VictoriaReceiver,
    prometheus_receiver,
    skip_without,
    victoria_receiver,
)

pytestmark = pytest.mark.integration
__all__ = ["prometheus_receiver", "victoria_receiver"]  # fixtures

Key = tuple[frozenset[tuple[str, str]], int]


def csv_samples(csv_dir: Path, host: str) -> dict[Key, float]:
    """Every sample the CSV files hold, keyed by (labels with ``__name__``, timestamp ms)."""
    expected: dict[Key, float] = {}
    for name, measurement in MEASUREMENTS.items():
        path = csv_dir / f"{name}.csv"
        if not path.exists():
            continue
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                ms = round(datetime.fromisoformat(row["ts"]).timestamp() * 1000)
                base = {"instance": host, "job": "system-info-collector"}
                base.update({c: row[c] for c in measurement.label_columns if row[c]})
                for field in measurement.fields:
                    if row[field.name] == "":
                        continue
                    labels = {**base, "__name__": host_metric_name(name, field.name)}
                    key = (frozenset(labels.items()), ms)
                    assert key not in expected, f"the CSV holds {key} twice"
                    expected[key] = float(row[field.name])
    return expected


def stored(receiver: Receiver, host: str) -> list[tuple[Key, float]]:
    return [
        ((frozenset(s["metric"].items()), ts), value)
        for s in receiver.series(f'{{instance="{host}"}}')
        for ts, value in s["values"]
    ]


def assert_every_sample_once(receiver: Receiver, csv_dir: Path, host: str) -> int:
    expected = csv_samples(csv_dir, host)
    assert len(expected) > 100
    got = poll(
        lambda: (s := stored(receiver, host)) and len(s) >= len(expected) and s,
        timeout=15,
        what=f"{len(expected)} samples in {receiver.kind}",
    )
    counts = Counter(key for key, _ in got)
    twice = [key for key, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} samples stored more than once, e.g. {twice[:3]}"
    missing = set(expected) - set(counts)
    extra = set(counts) - set(expected)
    assert not missing, f"{len(missing)} CSV samples not stored, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} stored samples not in the CSV, e.g. {sorted(extra)[:3]}"
    wrong = [
        (key, value, expected[key])
        for key, value in got
        if not math.isclose(value, expected[key], rel_tol=receiver.rel_tol)
    ]
    assert not wrong, f"values differ from the CSV: {wrong[:3]}"
    return len(expected)


@pytest.fixture
def run_collector(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    started: list[Collector] = []

    def start(url: str, host: str, **overrides: str) -> Collector:
        env = clean_env(
            SIC_SINKS="csv,remote_write",
            SIC_REMOTE_WRITE_URL=url,
            SIC_HOSTNAME=host,
            SIC_INTERVAL="200ms",
            SIC_CSV_DIR=str(tmp_path / "csv"),
            SIC_CSV_COMPRESS="none",
            SIC_RETRY_INITIAL="50ms",
            SIC_RETRY_MAX_WAIT="300ms",
            SIC_REMOTE_WRITE_TIMEOUT="2s",
            SIC_SHUTDOWN_TIMEOUT="15s",
            SIC_LOG_LEVEL="info",
        )
        env.update(overrides)
        collector = Collector(env)
        started.append(collector)
        return collector

    yield start
    for c in started:
        if c.proc.poll() is None:
            c.kill9()


def ticks_in_csv(csv_dir: Path) -> int:
    path = csv_dir / "memory.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


@pytest.mark.parametrize("kind", ["prometheus", "victoria-metrics"])
def test_every_sample_arrives_once_with_its_tick_time(
    kind: str,
    request: pytest.FixtureRequest,
    run_collector: Callable[..., Collector],
    tmp_path: Path,
) -> None:
    fixture = "prometheus_receiver" if kind == "prometheus" else "victoria_receiver"
    receiver: PrometheusReceiver | VictoriaReceiver = request.getfixturevalue(fixture)
    receiver.start()
    host = f"rw-{kind}-{tmp_path.name}"[:60]
    collector = run_collector(receiver.write_url, host)
    poll(lambda: ticks_in_csv(tmp_path / "csv") >= 12, timeout=20, what="12 ticks")
    assert collector.stop() == 0, "".join(collector.stderr[-20:])
    assert not collector.events("sink_batch_rejected")
    assert_every_sample_once(receiver, tmp_path / "csv", host)


def test_receiver_down_at_start_then_up_loses_nothing(
    prometheus_receiver: PrometheusReceiver,
    run_collector: Callable[..., Collector],
    tmp_path: Path,
) -> None:
    """Connection refused is transient: the records wait, then arrive in order, once."""
    host = f"rw-down-{tmp_path.name}"[:60]
    collector = run_collector(prometheus_receiver.write_url, host)
    poll(lambda: collector.events("sink_write_failed"), timeout=10, what="a failed write")
    poll(lambda: ticks_in_csv(tmp_path / "csv") >= 10, timeout=20, what="10 ticks")
    prometheus_receiver.start()
    poll(lambda: collector.events("sink_recovered"), timeout=20, what="the sink to recover")
    assert collector.stop() == 0, "".join(collector.stderr[-20:])
    assert not collector.events("sink_batch_rejected")
    assert_every_sample_once(prometheus_receiver, tmp_path / "csv", host)


def test_a_replayed_batch_stores_the_new_ticks_prometheus_would_refuse_whole(
    prometheus_receiver: PrometheusReceiver,
) -> None:
    """Prometheus refuses a whole request (400 out of order) when any sample in it is not
    newer than what it stored -- what a retry after a lost acknowledgement, or a replay
    after a crash, sends. The sink then sends the ticks one by one: the new ones are stored."""
    prometheus_receiver.start()
    metrics = Metrics()
    sink = RemoteWriteSink(
        RemoteWriteSettings(url=prometheus_receiver.write_url, timeout=5.0), metrics=metrics
    )
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    host = "rw-replay"

    def tick(n: int) -> Record:
        return Record("memory", t0 + timedelta(seconds=n), host, {}, {"used_bytes": 1000 + n})

    def opened() -> bool:
        try:
            sink.open()  # what the worker retries; a receiver just started may answer 503
        except TransientSinkError:
            return False
        return True

    poll(opened, timeout=15, interval=0.2, what="the receiver to take an empty write")
    try:
        sink.write([tick(n) for n in range(3)])
        sink.write([tick(n) for n in range(1, 6)])  # ticks 1, 2 again, then 3, 4, 5
    finally:
        sink.close()
    got = prometheus_receiver.series(f'sic_memory_used_bytes{{instance="{host}"}}')
    assert [v for _, v in got[0]["values"]] == [1000.0 + n for n in range(6)]
    refused = metrics.registry.get_sample_value(
        "sic_sink_samples_refused_total", {"sink": "remote_write"}
    )
    assert refused == 1  # tick 1; tick 2 was the newest stored sample: an accepted duplicate


def test_wrong_password_keeps_the_data_until_the_file_is_fixed(
    tmp_path: Path, run_collector: Callable[..., Collector]
) -> None:
    """VictoriaMetrics with basic auth answers 401 to a wrong password: ``open`` fails, the
    worker keeps the records and probes; the password never shows in a log line; once the
    password file is fixed (a rotated Secret), every sample arrives."""
    skip_without(VICTORIA)
    workdir = tmp_path / "vm"
    workdir.mkdir()
    receiver = VictoriaReceiver(workdir, basic_auth=("sic", "right-pw-4821"))
    receiver.start()
    try:
        password = tmp_path / "rw-password"
        password.write_text("wrong-pw-1234\n")
        host = f"rw-auth-{tmp_path.name}"[:60]
        collector = run_collector(
            receiver.write_url,
            host,
            SIC_REMOTE_WRITE_BASIC_AUTH_USER="sic",
            SIC_REMOTE_WRITE_BASIC_AUTH_PASSWORD_FILE=str(password),
            SIC_COLLECTORS="cpu,memory",
        )
        failed = poll(
            lambda: collector.events("sink_write_failed"), timeout=10, what="the refused credential"
        )
        assert "401" in failed[0]["error"]
        poll(lambda: ticks_in_csv(tmp_path / "csv") >= 8, timeout=20, what="8 ticks")
        password.write_text("right-pw-4821\n")
        poll(lambda: collector.events("sink_recovered"), timeout=20, what="the sink to recover")
        assert collector.stop() == 0, "".join(collector.stderr[-20:])
        logs = "".join(collector.stderr)
        assert "wrong-pw-1234" not in logs and "right-pw-4821" not in logs
        assert not collector.events("sink_batch_rejected")
        assert_every_sample_once(receiver, tmp_path / "csv", host)
    finally:
        receiver.stop()
