"""The per-record hot paths, made cheap, give exactly what the straightforward code they replaced
gave (kept here as the reference): CPU shares, disk I/O rates, the /metrics snapshot."""

from __future__ import annotations

import enum
import json
import math
import os
import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from system_info_collector.agent import Agent, LatestRecords
from system_info_collector.config import load_settings
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.metrics import Metrics
from system_info_collector.model import Record
from system_info_collector.providers import COLLECTORS, build_providers
from system_info_collector.providers._read import ProcFile
from system_info_collector.providers.cpu import (
    CpuProvider,
    StatReading,
    _read_stat_lines,
    parse_stat,
    read_stat,
    shares,
)
from system_info_collector.providers.diskio import (
    DEFAULT_DEVICES_EXCLUDE,
    SECTOR_BYTES,
    DiskIOProvider,
)
from system_info_collector.scheduler import Tick
from system_info_collector.schema import MEASUREMENTS, Measurement
from system_info_collector.sinks.postgres.encoding import UnnestEncoder, column_types
from system_info_collector.validate import PERCENT_SLACK, Rejection, check, validate
from tests.helpers import PROC_FIXTURES
from tests.unit.test_scenarios import SCENARIOS, expected_records, run_scenario
from tests.unit.test_scenarios import TS as T_SCENARIO

COLUMNS = (
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
)


def reference_shares(prev: tuple[int, ...], cur: tuple[int, ...]) -> dict[str, float] | None:
    deltas = [c - p for p, c in zip(prev, cur, strict=True)]
    if any(d < 0 for d in deltas):
        return None
    total = sum(deltas[:8])
    if total <= 0:
        return None
    fields = {f"{name}_percent": 100.0 * d / total for name, d in zip(COLUMNS, deltas, strict=True)}
    fields["usage_percent"] = 100.0 * (total - deltas[3] - deltas[4]) / total
    return fields


def test_cpu_shares_are_the_same_floats_in_the_same_order() -> None:
    rng = random.Random("cpu-shares")
    for _ in range(5000):
        prev = tuple(rng.randrange(0, 10**12) for _ in COLUMNS)
        step = rng.choice([0, 1, 7, 1000, 10**6])
        cur = tuple(p + rng.randrange(-1 if rng.random() < 0.05 else 0, step + 1) for p in prev)
        got, want = shares(prev, cur), reference_shares(prev, cur)
        assert got == want
        if want is not None:
            assert got is not None and list(got) == list(want)  # column order too


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def diskstats(devices: dict[str, list[int]]) -> str:
    return "".join(
        f" 259 {i} {d} " + " ".join(map(str, n)) + "\n" for i, (d, n) in enumerate(devices.items())
    )


def test_diskio_rates_are_the_same_numbers(tmp_path: Path) -> None:
    rng = random.Random("diskio")
    names = ["nvme0n1", "sda", "loop3", "vdb", "dm-0"]
    counters = {d: [rng.randrange(10**9) for _ in range(17)] for d in names}
    (tmp_path / "diskstats").write_text(diskstats(counters))
    clock = Clock()
    exclude = re.compile(DEFAULT_DEVICES_EXCLUDE)
    provider = DiskIOProvider(HostPaths(proc=str(tmp_path)), clock=clock, devices_exclude=exclude)
    provider.prime()
    for _ in range(50):
        before = {d: list(n) for d, n in counters.items()}
        for n in counters.values():
            for i in range(len(n)):
                n[i] += rng.randrange(0, 5000)
        if rng.random() < 0.1:
            counters["sda"][0] = 0  # a reset: no sample for sda this time
        then = clock.now
        clock.now += rng.choice([0.25, 1.0, 0.999, 3.0])
        elapsed = clock.now - then
        (tmp_path / "diskstats").write_text(diskstats(counters))
        got = {s.tags["device"]: dict(s.fields) for s in provider.collect()}
        want = {}
        for d, n in counters.items():
            p = before[d]
            if d == "loop3" or any(n[i] < p[i] for i in (0, 2, 3, 4, 6, 7, 9)):
                continue
            dlt = [c - q for q, c in zip(p, n, strict=True)]
            want[d] = {
                "reads_total": n[0],
                "writes_total": n[4],
                "read_bytes_total": n[2] * SECTOR_BYTES,
                "written_bytes_total": n[6] * SECTOR_BYTES,
                "read_time_seconds_total": n[3] / 1000.0,
                "write_time_seconds_total": n[7] / 1000.0,
                "io_time_seconds_total": n[9] / 1000.0,
                "read_bytes_per_second": dlt[2] * SECTOR_BYTES / elapsed,
                "write_bytes_per_second": dlt[6] * SECTOR_BYTES / elapsed,
                "reads_per_second": dlt[0] / elapsed,
                "writes_per_second": dlt[4] / elapsed,
                "utilization_percent": min(100.0, dlt[9] / (elapsed * 10.0)),
            }
        assert got == want


def reference_merge(
    latest: dict[str, list[Record]], records: list[Record]
) -> dict[str, list[Record]]:
    def entity(r: Record) -> tuple[str, ...]:
        return tuple(r.tags.get(k, "") for k in MEASUREMENTS[r.measurement].entity)

    merged = {name: {entity(r): r for r in recs} for name, recs in latest.items()}
    for record in records:
        merged.setdefault(record.measurement, {})[entity(record)] = record
    return {name: list(by_entity.values()) for name, by_entity in merged.items()}


def test_latest_records_match_a_full_merge_every_tick() -> None:
    rng = random.Random("latest")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    kept = LatestRecords()
    want: dict[str, list[Record]] = {}
    for i in range(200):
        ts = t0 + timedelta(seconds=i)
        batch = []
        for name, m in MEASUREMENTS.items():
            for _ in range(rng.randrange(0, 6)):
                tags = {c: f"{c}{rng.randrange(4)}" for c in m.entity}
                batch.append(Record(name, ts, "h", tags, {"n": i}))
        got = kept.update(batch)
        want = reference_merge(want, batch)
        assert got == want and [list(got)] == [list(want)]
        assert LatestRecords(want).update(batch) == reference_merge(want, batch)


@pytest.mark.parametrize(
    ("env", "kept"),
    [
        ({}, True),
        ({"SIC_HTTP_LISTEN": ""}, False),
        ({"SIC_PROMETHEUS_HOST_METRICS": "off"}, False),
    ],
)
def test_the_metrics_snapshot_is_kept_only_when_host_metrics_are_exposed(
    env: dict[str, str], kept: bool
) -> None:
    proc = str(PROC_FIXTURES / "basic")
    settings = load_settings(
        {"SIC_HOST_PROC": proc, "SIC_COLLECTORS": "memory", "SIC_SINKS": "stdout", **env}
    )
    agent = Agent(settings, build_providers(settings), [], Metrics(), host="h")
    agent.start()
    try:
        ts = datetime.fromtimestamp(1_000, UTC)
        accepted = agent.tick(Tick(1_000, ts, 0.0, 0.0))
    finally:
        agent.close()
    assert [r.measurement for r in accepted] == ["memory"]
    assert agent.latest == ({"memory": accepted} if kept else {})


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_give_exactly_the_expected_numbers(name: str, tmp_path: Path) -> None:
    """Not approximately (as test_scenarios compares): the very same floats as the code that
    wrote the expected output."""
    records, _ = run_scenario(name, tmp_path)
    assert records == expected_records(name)


def reference_check(record: Record) -> Rejection | None:
    """validate.check as it was: every rule, field by field."""
    collector = COLLECTORS.get(record.measurement)
    if collector is None:
        return Rejection(record, "measurement", record.measurement, "unknown_measurement")
    fields = record.fields
    for f in collector.measurement.fields:
        value = fields.get(f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return Rejection(record, f.name, value, "type")
        if f.sql_type == "bigint" and not isinstance(value, int):
            return Rejection(record, f.name, value, "type")
        if not math.isfinite(value):
            return Rejection(record, f.name, value, "finite")
        if value < 0 and not f.signed:  # a clock offset may be negative (timex collector)
            return Rejection(record, f.name, value, "non_negative")
        if f.kind == "percent" and value > 100 + PERCENT_SLACK:
            return Rejection(record, f.name, value, "percent_range")
    rules = collector.rules
    for part, whole in rules.not_above:
        if fields[part] > fields[whole] + PERCENT_SLACK:
            return Rejection(record, part, fields[part], f"not_above_{whole}")
    problem = rules.check(fields) if rules.check is not None else None
    return Rejection(record, *problem) if problem is not None else None


class Flag(enum.IntEnum):
    ON = 1


NASTY: list[object] = [
    -1,
    -0.0,
    0,
    0.0,
    -1e-300,
    float("inf"),
    float("-inf"),
    float("nan"),
    True,
    False,
    None,
    "12",
    100,
    100.0,
    100 + 5e-7,
    100 + 2e-6,
    1e308,
    1.7e308,
    10**400,
    2**64,
    7.5,
    3,
    Flag.ON,
    Decimal("1.5"),
]


def scenario_records(tmp_path: Path) -> list[Record]:
    bases = []
    for name in SCENARIOS:
        for r in run_scenario(name, tmp_path / name)[0]:
            bases.append(Record(r["measurement"], T_SCENARIO, r["host"], r["tags"], r["fields"]))
    assert {b.measurement for b in bases} == set(COLLECTORS)
    return bases


def mutated(rng: random.Random, base: Record, changes: list[int]) -> Record:
    fields: dict[str, object] = dict(base.fields)
    for _ in range(rng.choice(changes)):
        if not fields:  # a small measurement (bonding: two fields) mutated down to nothing
            break
        key = rng.choice(list(fields))
        roll = rng.random()
        if roll < 0.1:
            del fields[key]
        elif roll < 0.6:
            fields[key] = rng.choice(NASTY)
        elif type(v := fields[key]) not in (int, float) or not abs(v) < 1e300:  # type: ignore[operator]
            fields[key] = 1
        elif roll < 0.8:  # a plausible but inconsistent number of the right type
            fields[key] = type(v)(v * rng.choice([0, 0.5, 1.01, 2, 10]))  # type: ignore[operator]
        else:  # the other numeric type
            fields[key] = float(v) if type(v) is int else round(v)  # type: ignore[call-overload]
    return Record(base.measurement, base.ts, base.host, base.tags, fields)  # type: ignore[arg-type]


def test_the_compiled_rules_reject_exactly_what_every_rule_rejected(tmp_path: Path) -> None:
    rng = random.Random("validate")
    bases = scenario_records(tmp_path)
    rules_seen = Counter[str]()
    for _ in range(20_000):
        record = mutated(rng, rng.choice(bases), [0, 1, 1, 2, 3])
        try:
            want: Rejection | type[Exception] | None = reference_check(record)
        except Exception as exc:
            want = type(exc)
        try:
            got: Rejection | type[Exception] | None = check(record)
        except Exception as exc:
            got = type(exc)
        assert got == want, record
        rules_seen[want.rule if isinstance(want, Rejection) else str(want)] += 1
    # the fuzzing reached every kind of rule (and clean records)
    assert {"type", "finite", "non_negative", "percent_range", "None"} <= set(rules_seen)
    assert any(r.startswith("not_above_") for r in rules_seen)
    assert {"cpu_states_sum_100", "used_plus_available_total"} <= set(rules_seen)
    unknown = Record("gpu", T_SCENARIO, "h", {}, {})
    assert check(unknown) == reference_check(unknown)


def test_a_tick_of_records_is_judged_as_each_record_alone(tmp_path: Path) -> None:
    """validate() proves whole runs of one measurement at once (and the CPU shares' sum for all
    CPUs at once): the same records kept, in order, and the same rejections as record by record,
    for ticks of up to 300 records where a few or none break a rule."""
    rng = random.Random("validate-batches")
    by_measurement: dict[str, list[Record]] = {}
    for base in scenario_records(tmp_path):
        by_measurement.setdefault(base.measurement, []).append(base)
    seen = Counter[str]()
    for _ in range(600):
        records = []
        for name in rng.sample(list(by_measurement), rng.randrange(1, len(by_measurement) + 1)):
            bases = by_measurement[name]
            changes = rng.choice([[0], [0] * 50 + [1], [0, 0, 0, 1, 2]])
            for _ in range(rng.choice([1, 2, 30, 300 if name == "cpu" else 5])):
                records.append(mutated(rng, rng.choice(bases), changes))
        try:
            want = [(r, reference_check(r)) for r in records]
        except Exception:
            continue  # e.g. 10**400: no rule says what that is (check() raises too)
        accepted, rejected = validate(records)
        assert accepted == [r for r, problem in want if problem is None]
        assert rejected == [problem for _, problem in want if problem is not None]
        seen["clean" if not rejected else "some rejected"] += 1
        seen.update(p.rule for p in rejected)
    assert seen["clean"] > 50 and seen["some rejected"] > 50
    assert seen["cpu_states_sum_100"] > 10


def stat_text(cpus: dict[str, list[int]], extra: str = "") -> str:
    lines = [
        ("cpu " if name == "cpu-total" else name + " ") + " ".join(map(str, v))
        for name, v in cpus.items()
    ]
    return "\n".join(lines) + "\nintr 1 2 3\nctxt 99\n" + extra


def test_the_cpu_provider_gives_the_shares_of_every_cpu_as_before(tmp_path: Path) -> None:
    """Whole-file fast path or per-CPU path: the same samples as parse_stat + the reference
    shares, through CPUs going offline and online, counter resets, idle CPUs, old kernels."""
    rng = random.Random("cpu-provider")
    provider = CpuProvider(HostPaths(proc=str(tmp_path)))
    cpus = {
        name: [rng.randrange(10**9) for _ in COLUMNS]
        for name in ["cpu-total", *(f"cpu{i}" for i in range(6))]
    }
    (tmp_path / "stat").write_text(stat_text(cpus))
    provider.prime()
    previous = parse_stat(stat_text(cpus))
    paths_taken = Counter[str]()
    for step in range(300):
        event = rng.random()
        if event < 0.05:
            cpus.pop(rng.choice([c for c in cpus if c != "cpu-total"] or ["cpu-total"]), None)
            cpus.setdefault("cpu-total", [0] * 10)
        elif event < 0.1:
            cpus[f"cpu{rng.randrange(12)}"] = [rng.randrange(10**9) for _ in COLUMNS]
        for v in cpus.values():
            for i in range(len(v)):
                v[i] += rng.choice([0, 0, 1, 3, 250])
        if event > 0.97:
            cpus[rng.choice(list(cpus))][0] -= 10**6  # a reset
        if 0.9 < event < 0.93:
            for name in cpus:
                cpus[name] = cpus[name][:7]  # a 2.6.0 kernel: seven counters
        elif step % 50 == 0:
            for name, v in cpus.items():
                cpus[name] = [*v, 0, 0, 0][:10]
        late = f"cpu99 {' '.join(str(step + i) for i in range(10))}\n"  # after intr: still a CPU
        text = stat_text(cpus, extra=late if 100 <= step < 130 else "")
        (tmp_path / "stat").write_text(text)
        current = parse_stat(text)
        want = []
        for name, values in current.items():
            prev = previous.get(name)
            fields = reference_shares(prev, values) if prev is not None else None
            if fields is not None:
                want.append(({"cpu": name}, fields))
        got = [(dict(s.tags), dict(s.fields)) for s in provider.collect()]
        assert got == want
        assert [list(f) for _, f in got] == [list(f) for _, f in want]
        previous = current
        paths_taken["fast" if len(want) == len(current) else "per-cpu"] += 1
    assert paths_taken["fast"] > 100 and paths_taken["per-cpu"] > 10


def test_the_whole_block_parse_of_proc_stat_reads_what_the_line_parse_reads() -> None:
    """read_stat parses all CPU lines at once when they are all a name and ten counters; on any
    other text it must give what the line-by-line parse gives (or the same error)."""
    rng = random.Random("stat-parse")
    odd = ["x", "-3", "+5", "1_0", "", "\t7", "12 13", "cpu", "cpu-total", "cpu3", "٣"]
    seen = Counter[str]()
    for _ in range(3000):
        lines = [
            ("cpu " if i < 0 else f"cpu{i} ") + " ".join(str(rng.randrange(10**6)) for _ in COLUMNS)
            for i in range(-1, rng.randrange(1, 9))
        ]
        lines += ["intr 5 1 2", "ctxt 99", "btime 17", "processes 4", "procs_running 2"]
        for _ in range(rng.choice([0, 0, 1, 2])):
            i = rng.randrange(len(lines))
            parts = lines[i].split(" ")
            roll = rng.random()
            if roll < 0.3:
                parts[rng.randrange(len(parts))] = rng.choice(odd)
            elif roll < 0.5 and len(parts) > 1:
                del parts[rng.randrange(1, len(parts))]
            elif roll < 0.6:
                parts.append(str(rng.randrange(100)))
            elif roll < 0.8:
                lines.insert(rng.randrange(len(lines) + 1), lines[rng.randrange(len(lines))])
                continue
            else:
                lines.insert(rng.randrange(len(lines) + 1), lines.pop(i))
                continue
            lines[i] = rng.choice([" ", "  ", "\t"]).join(parts)
        text = "\n".join(lines) + "\n"
        try:
            want: object = _read_stat_lines(text.splitlines(), "stat")
        except ProviderError as exc:
            want = str(exc)
        try:
            got: object = read_stat(text, "stat")
        except ProviderError as exc:
            got = str(exc)
        assert got == want, text
        if isinstance(want, StatReading):
            assert [list(got.cpus), list(got.kernel)] == [list(want.cpus), list(want.kernel)]  # type: ignore[attr-defined]
        seen["error" if isinstance(want, str) else "read"] += 1
    assert seen["error"] > 100 and seen["read"] > 1000


def test_a_kept_open_file_is_read_whole_every_time(tmp_path: Path) -> None:
    """Rewritten in place (what the synthetic host does), longer than one read, shorter again;
    and real procfs files, read twice through the same descriptor."""
    path = tmp_path / "big"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    reader = ProcFile(str(path))
    try:
        for size in (10, 200_000, 65_536, 65_537, 3):
            data = (f"{size} " * size)[:size].encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            assert reader.read() == data.decode()
    finally:
        os.close(fd)
        reader.close()
    for name in ("stat", "self/mountinfo", "meminfo"):
        kept = ProcFile(f"/proc/{name}")
        try:
            first, second = kept.read(), kept.read()
        finally:
            kept.close()
        with open(f"/proc/{name}") as f:
            fresh = f.read()
        assert first.split("\n", 1)[0].split()[0] == fresh.split("\n", 1)[0].split()[0]
        assert abs(len(second) - len(fresh)) < 2048 and second.count("\n") == fresh.count("\n")


def reference_unnest(m: Measurement, records: list[Record]) -> str:
    """UnnestEncoder.source as it was: Measurement.row (tags JSON always by json.dumps), then
    one encoding call per value."""

    def row(record: Record) -> list[object]:
        tags = record.tags
        extra = {k: v for k, v in tags.items() if k not in m.label_columns}
        return [
            record.ts,
            record.host,
            *(tags.get(c, "") for c in m.label_columns),
            *(record.fields.get(f.name) for f in m.fields),
            json.dumps(extra, separators=(",", ":"), sort_keys=True),
            record.interval_ms or None,
        ]

    def number(v: object) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, bool):
            return str(int(v))
        if isinstance(v, float):
            return repr(float(v))
        return str(v)

    def text(v: object) -> str:
        t = v if type(v) is str else str(v)
        return '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def ts(v: object) -> str:
        return v.isoformat() if isinstance(v, datetime) else text(v)

    rows = [row(r) for r in records]
    arrays = []
    for i, (_, sql_type) in enumerate(column_types(m)):
        encode = ts if sql_type == "timestamptz" else number if sql_type in NUMERIC else text
        body = "{" + ",".join(encode(r[i]) for r in rows) + "}"
        arrays.append("'" + body.replace("'", "''") + f"'::{sql_type}[]")
    alias = "u(" + ", ".join(f'"{c}"' for c in m.columns) + ")"
    return f"unnest({', '.join(arrays)}) AS {alias}"


NUMERIC = {"double precision", "bigint", "integer", "real", "numeric", "smallint"}
ODD_TEXTS = ["", 'a"b', "back\\slash", "it's", "\n", "{x,y}", "NULL", "é", "a b", '"', "\\"]


def test_the_unnest_encoding_is_the_text_of_one_call_per_value(tmp_path: Path) -> None:
    """The live PostgreSQL batch text: the column-at-once paths give exactly what encoding each
    value of Measurement.row did, for whole ticks of real records and of hostile ones."""
    rng = random.Random("unnest")
    by_measurement: dict[str, list[Record]] = {}
    for base in scenario_records(tmp_path):
        by_measurement.setdefault(base.measurement, []).append(base)
    encoders = {name: UnnestEncoder(m) for name, m in MEASUREMENTS.items()}
    other_ts = datetime(2026, 1, 1, 12, 0, 0, 123456)  # naive
    for _ in range(400):
        name = rng.choice(list(by_measurement))
        m = MEASUREMENTS[name]
        records = []
        for _ in range(rng.choice([1, 2, 40])):
            base = rng.choice(by_measurement[name])
            hostile = rng.random() < 0.3
            record = mutated(rng, base, [0, 1, 2]) if hostile else base
            tags = dict(record.tags)
            if hostile and rng.random() < 0.5:
                tags[rng.choice([*m.label_columns, "team", "rack"])] = rng.choice(ODD_TEXTS)
            same_instant = record.ts.astimezone(timezone(timedelta(hours=1)))
            ts = rng.choice([record.ts, other_ts, same_instant]) if hostile else record.ts
            host = rng.choice(["h", *ODD_TEXTS]) if hostile else record.host
            interval = rng.choice([0, 1000, 250]) if hostile else record.interval_ms
            records.append(Record(name, ts, host, tags, record.fields, interval))
        try:
            want = reference_unnest(m, records)
        except Exception as exc:  # e.g. no str() for a value: the same error, then
            with pytest.raises(type(exc)):
                encoders[name].source(records)
            continue
        assert encoders[name].source(records) == want


def test_cached_metric_children_are_labels_children_and_count_the_same() -> None:
    """``Metrics.child`` (the per-tick label lookup, done once) returns what ``labels()`` does,
    and updates through it expose the same series and values as updates through ``labels()``."""
    cached, plain = Metrics(), Metrics()
    for _ in range(3):
        for name in ("cpu", "memory", "net"):
            cached.child(cached.records_collected, name).inc(2)
            plain.records_collected.labels(name).inc(2)
            cached.child(cached.collector_cpu, name).inc(0.25)
            plain.collector_cpu.labels(name).inc(0.25)
        cached.child(cached.queue_depth, "csv").set(7)
        plain.queue_depth.labels("csv").set(7)
    assert cached.child(cached.collector_cpu, "cpu") is cached.collector_cpu.labels("cpu")

    def samples(m: Metrics) -> list[tuple[str, list[tuple[str, str]], float]]:
        return sorted(
            (s.name, sorted(s.labels.items()), s.value)
            for family in m.registry.collect()
            if family.name not in ("sic_build",)
            for s in family.samples
            if not s.name.endswith("_created")
        )

    assert samples(cached) == samples(plain)
