"""The remote_write sink against real receivers: Debian's Prometheus (remote-write receiver)
and VictoriaMetrics, started by the tests. The collector runs as a real process with the CSV
and remote_write sinks and ``/metrics``; what the receiver stores must be the series a scrape
of ``/metrics`` shows (node_exporter's names), one sample per tick at its tick time, with the
values the CSV files hold for the same ticks."""

from __future__ import annotations

import csv
import math
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from system_info_collector.config import RemoteWriteSettings
from system_info_collector.errors import TransientSinkError
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.providers.cpu import CPU_STATES
from system_info_collector.sinks.remote_write import RemoteWriteSink
from system_info_collector.sinks.series import SERIES
from tests.helpers import assert_counters_give_the_csv_shares, clean_env, poll
from tests.integration.conftest import Collector
from tests.integration.receivers import (
    VICTORIA,
    PrometheusReceiver,
    Receiver,
    VictoriaReceiver,
    free_port,
    prometheus_receiver,
    skip_without,
    victoria_receiver,
)

pytestmark = pytest.mark.integration
__all__ = ["prometheus_receiver", "victoria_receiver"]  # fixtures

Labels = frozenset[tuple[str, str]]
Key = tuple[Labels, int]

# (CSV file, CSV column, node_exporter name, CSV label column -> node_exporter label):
# the samples whose value the CSV holds too.
FROM_CSV = (
    ("memory", "available_bytes", "node_memory_MemAvailable_bytes", {}),
    ("memory", "total_bytes", "node_memory_MemTotal_bytes", {}),
    ("memory", "free_bytes", "node_memory_MemFree_bytes", {}),
    ("memory", "swap_total_bytes", "node_memory_SwapTotal_bytes", {}),
    *(
        (
            "disk",
            ours,
            theirs,
            {"mountpoint": "mountpoint", "device": "device", "fstype": "fstype"},
        )
        for ours, theirs in (
            ("available_bytes", "node_filesystem_avail_bytes"),
            ("free_bytes", "node_filesystem_free_bytes"),
            ("total_bytes", "node_filesystem_size_bytes"),
            ("inodes_free", "node_filesystem_files_free"),
        )
    ),
    *(
        ("diskio", ours, theirs, {"device": "device"})
        for ours, theirs in (
            ("read_bytes_total", "node_disk_read_bytes_total"),
            ("written_bytes_total", "node_disk_written_bytes_total"),
            ("reads_total", "node_disk_reads_completed_total"),
            ("io_time_seconds_total", "node_disk_io_time_seconds_total"),
        )
    ),
    *(
        ("net", ours, theirs, {"interface": "device"})
        for ours, theirs in (
            ("receive_bytes_total", "node_network_receive_bytes_total"),
            ("transmit_packets_total", "node_network_transmit_packets_total"),
        )
    ),
    ("system", "load1", "node_load1", {}),
)


def _rows(csv_dir: Path, name: str) -> list[dict[str, str]]:
    path = csv_dir / f"{name}.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _ms(ts: str) -> int:
    return round(datetime.fromisoformat(ts).timestamp() * 1000)


def csv_samples(csv_dir: Path, host: str) -> dict[Key, float | None]:
    """The pushed samples the CSV files vouch for, keyed by (labels with ``__name__``,
    timestamp ms): the value of those :data:`FROM_CSV` maps, and a ``node_cpu_seconds_total``
    sample per mode of every per-CPU row (value ``None``: the CSV holds shares; compared by
    :func:`assert_cpu_shares`)."""
    base = {"instance": host, "job": "system-info-collector"}
    expected: dict[Key, float | None] = {}

    def put(labels: dict[str, str], ms: int, value: float | None) -> None:
        key = (frozenset({**base, **labels}.items()), ms)
        assert key not in expected, f"the CSV holds {key} twice"
        expected[key] = value

    for measurement, column, name, label_map in FROM_CSV:
        for row in _rows(csv_dir, measurement):
            if row[column] != "":
                labels = {theirs: row[ours] for ours, theirs in label_map.items() if row[ours]}
                put({**labels, "__name__": name}, _ms(row["ts"]), float(row[column]))
    for row in _rows(csv_dir, "cpu"):
        if row["cpu"] != "cpu-total":
            for mode in CPU_STATES:
                labels = {"__name__": "node_cpu_seconds_total", "cpu": row["cpu"][3:], "mode": mode}
                put(labels, _ms(row["ts"]), None)
    return expected


def stored(receiver: Receiver, host: str) -> list[tuple[Key, float]]:
    return [
        ((frozenset(s["metric"].items()), ts), value)
        for s in receiver.series(f'{{instance="{host}"}}')
        for ts, value in s["values"]
    ]


def assert_every_sample_once(
    receiver: Receiver, csv_dir: Path, host: str
) -> list[tuple[Key, float]]:
    """Every CSV-vouched sample stored once with the CSV's value, every stored sample at a
    CSV tick, no sample twice; returns what is stored."""
    expected = csv_samples(csv_dir, host)
    assert len(expected) > 100
    got: list[tuple[Key, float]] = poll(
        lambda: (s := stored(receiver, host)) and set(expected) <= {k for k, _ in s} and s,
        timeout=15,
        what=f"{len(expected)} samples in {receiver.kind}",
    )
    counts = Counter(key for key, _ in got)
    twice = [key for key, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} samples stored more than once, e.g. {twice[:3]}"
    ticks = {_ms(row["ts"]) for row in _rows(csv_dir, "memory")}
    off_tick = [key for key in counts if key[1] not in ticks]
    assert not off_tick, f"samples not at a tick of the CSV: {off_tick[:3]}"
    wrong = [
        (key, value, expected[key])
        for key, value in got
        if expected.get(key) is not None
        and not math.isclose(value, expected[key] or 0.0, rel_tol=receiver.rel_tol)
    ]
    assert not wrong, f"values differ from the CSV: {wrong[:3]}"
    return got


def assert_cpu_shares(got: list[tuple[Key, float]], csv_dir: Path) -> None:
    """``node_cpu_seconds_total`` tick to tick gives the CSV's per-CPU shares of that tick."""
    seconds: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for (labels, ms), value in got:
        label = dict(labels)
        if label["__name__"] == "node_cpu_seconds_total":
            seconds[(label["cpu"], label["mode"])][ms] = value
    assert_counters_give_the_csv_shares(seconds, _rows(csv_dir, "cpu"), _ms, lambda c: c[3:])


def scrape(port: int) -> set[tuple[str, Labels]]:
    """The host series a scrape of ``/metrics`` shows (node_exporter's names)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items()))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("node_")
    }


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
def test_the_series_of_metrics_arrive_once_at_their_tick_time(
    kind: str,
    request: pytest.FixtureRequest,
    run_collector: Callable[..., Collector],
    tmp_path: Path,
) -> None:
    fixture = "prometheus_receiver" if kind == "prometheus" else "victoria_receiver"
    receiver: PrometheusReceiver | VictoriaReceiver = request.getfixturevalue(fixture)
    receiver.start()
    host = f"rw-{kind}-{tmp_path.name}"[:60]
    port = free_port()
    collector = run_collector(receiver.write_url, host, SIC_HTTP_LISTEN=f"127.0.0.1:{port}")
    poll(lambda: ticks_in_csv(tmp_path / "csv") >= 6, timeout=20, what="6 ticks")
    scraped = scrape(port)
    poll(lambda: ticks_in_csv(tmp_path / "csv") >= 12, timeout=20, what="12 ticks")
    assert collector.stop() == 0, "".join(collector.stderr[-20:])
    assert not collector.events("sink_batch_rejected")
    got = assert_every_sample_once(receiver, tmp_path / "csv", host)
    assert_cpu_shares(got, tmp_path / "csv")
    pushed = {
        (
            dict(labels)["__name__"],
            frozenset((k, v) for k, v in labels if k not in ("__name__", "instance", "job")),
        )
        for (labels, _), _ in got
    }
    assert {name for name, _ in pushed} == {name for name, _ in scraped}
    assert scraped <= pushed, f"scraped but not pushed: {sorted(scraped - pushed)[:3]}"
    for name in (
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_filesystem_avail_bytes",
        "node_disk_read_bytes_total",
        "node_network_receive_bytes_total",
    ):
        assert name in {n for n, _ in pushed}, name


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
        fields = {"node_memory_Active_bytes": 1000.0 + n}
        return Record(SERIES, t0 + timedelta(seconds=n), host, {}, fields)

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
    got = prometheus_receiver.series(f'node_memory_Active_bytes{{instance="{host}"}}')
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
