"""SIC_TEXTFILE_DIRECTORY against the real node_exporter's textfile collector on the same
directory: the same families, HELP, types, samples, mtimes and scrape error, for good files,
a broken one, one with timestamps, a type clash between files and files that are not .prom."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import poll
from tests.integration.promstack import collector, get, node_exporter

FILES = {
    "backup.prom": (
        "# HELP backup_last_success_seconds Last good backup.\n"
        "# TYPE backup_last_success_seconds gauge\n"
        'backup_last_success_seconds{job="db"} 1.7e+09\n'
        'backup_last_success_seconds{job="files"} 1.6e+09\n'
    ),
    "cron.prom": 'cron_runs_total{job="rotate"} 3\n',  # no HELP, no TYPE: untyped
    "more.prom": (
        "# HELP backup_last_success_seconds Last good backup.\n"
        "# TYPE backup_last_success_seconds gauge\n"
        'backup_last_success_seconds{job="mail"} 1.5e+09\n'  # merged with backup.prom's
        "# HELP raid_degraded 1 when an array is degraded.\n"
        "# TYPE raid_degraded gauge\n"
        'raid_degraded{md="md0"} 0\n'
    ),
    "notes.txt": "ignored_metric 1\n",  # only *.prom files are read
}
BROKEN = {
    "broken.prom": "broken{ 1\n",
    "stamped.prom": "stamped_metric 1 1700000000000\n",  # client-side timestamps
}


def textfile_families(text: str) -> dict[str, Metric]:
    return {
        f.name: f
        for f in text_string_to_metric_families(text)
        if not f.name.startswith(("node_", "sic_", "go_", "process_", "promhttp_", "python_"))
        or f.name.startswith("node_textfile_")
    }


def compare(ours: dict[str, Metric], theirs: dict[str, Metric]) -> None:
    assert sorted(ours) == sorted(theirs)
    for name, family in theirs.items():
        mine = ours[name]
        assert (mine.type, mine.documentation) == (family.type, family.documentation), name
        got = {tuple(sorted(s.labels.items())): s.value for s in mine.samples}
        want = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        assert got.keys() == want.keys(), name
        for key, value in want.items():
            tolerance = 1.0 if name == "node_textfile_mtime_seconds" else 0.0
            assert abs(got[key] - value) <= tolerance, (name, key, got[key], value)


def test_textfiles_are_served_as_node_exporter_serves_them(tmp_path: Path) -> None:
    directory = tmp_path / "textfile"
    directory.mkdir()
    for name, text in FILES.items():
        (directory / name).write_text(text)
    ne_args = ("--collector.disable-defaults", "--collector.textfile")
    ne_args += (f"--collector.textfile.directory={directory}",)
    env = {"SIC_TEXTFILE_DIRECTORY": str(directory), "SIC_COLLECTORS": "memory"}
    with node_exporter(tmp_path, *ne_args) as ne, collector(tmp_path, **env) as sic:
        theirs = textfile_families(get(f"http://{ne}/metrics")[1].decode())
        ours = textfile_families(get(f"http://{sic}/metrics")[1].decode())
        compare(ours, theirs)
        assert {s.value for s in ours["node_textfile_scrape_error"].samples} == {0.0}
        assert len(ours["backup_last_success_seconds"].samples) == 3
        assert ours["cron_runs_total"].documentation == f"Metric read from {directory}/cron.prom"
        # (node_exporter 1.5 drops, with a gathering error but scrape_error 0, the samples of a
        # family whose HELP differs between files; we merge them: the files agree here)

        # a broken file and a file with timestamps are left out whole, with the error flag
        for name, text in BROKEN.items():
            (directory / name).write_text(text)
        theirs = textfile_families(get(f"http://{ne}/metrics")[1].decode())
        ours = textfile_families(get(f"http://{sic}/metrics")[1].decode())
        compare(ours, theirs)
        assert {s.value for s in ours["node_textfile_scrape_error"].samples} == {1.0}
        assert "stamped_metric" not in ours

        # the error clears when the file is fixed (written elsewhere, renamed into place)
        for name in BROKEN:
            (directory / name).unlink()
        fixed = tmp_path / "tmp.prom"
        fixed.write_text('cron_runs_total{job="fixed"} 1\n')
        os.replace(fixed, directory / "fixed.prom")
        ours = textfile_families(get(f"http://{sic}/metrics")[1].decode())
        theirs = textfile_families(get(f"http://{ne}/metrics")[1].decode())
        compare(ours, theirs)
        assert {s.value for s in ours["node_textfile_scrape_error"].samples} == {0.0}
    log = [json.loads(line) for line in (tmp_path / "collector.log").read_text().splitlines()]
    failed = {e["file"] for e in log if e.get("event") == "textfile_failed"}
    assert failed == {str(directory / "broken.prom"), str(directory / "stamped.prom")}


def test_a_missing_directory_is_a_scrape_error_not_a_failed_start(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet"
    with collector(tmp_path, SIC_TEXTFILE_DIRECTORY=str(missing), SIC_COLLECTORS="memory") as sic:
        ours = textfile_families(get(f"http://{sic}/metrics")[1].decode())
        assert {s.value for s in ours["node_textfile_scrape_error"].samples} == {1.0}
        missing.mkdir()
        (missing / "late.prom").write_text("late_metric 42\n")
        poll(
            lambda: "late_metric 42.0" in get(f"http://{sic}/metrics")[1].decode(),
            what="the directory's file once it exists",
        )
