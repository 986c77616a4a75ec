"""node_exporter's textfile collector: the ``*.prom`` files of ``SIC_TEXTFILE_DIRECTORY``
(what cron jobs and other programs write for the node's Prometheus) on ``/metrics``.

As node_exporter does: the files are read at every scrape, in name order; a file that cannot be
read or parsed, or that carries client-side timestamps, is left out whole and
``node_textfile_scrape_error`` is 1; ``node_textfile_mtime_seconds{file}`` is each file read;
families of the same name from several files are merged (a family whose type differs from the
first file's is an error); a family without HELP gets ``Metric read from <files>``. Files are
written elsewhere and renamed into place by their writers (the usual ``mv`` idiom), so a scrape
never sees half a file. Push sinks do not carry these (they are scrape-time only).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from system_info_collector.logging import event

MAX_FILE_BYTES = 16 * 1024 * 1024  # a bigger file is an error (a runaway writer, not metrics)
OWN = ("node_textfile_mtime_seconds", "node_textfile_scrape_error")


class TextfileCollector:
    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._reported: dict[str, str] = {}  # file -> the problem last logged (once each)

    def describe(self) -> Iterable[Metric]:
        return ()

    def _problem(self, path: str, problem: str | None) -> None:
        if problem is None:
            if self._reported.pop(path, None) is not None:
                event("INFO", "textfile_recovered", "textfile read again", file=path)
            return
        if self._reported.get(path) != problem:
            self._reported[path] = problem
            event(
                "ERROR",
                "textfile_failed",
                "textfile left out of /metrics",
                file=path,
                error=problem,
            )

    def _read(self, path: str) -> tuple[list[Metric], float]:
        with open(path, encoding="utf-8") as handle:
            mtime = os.fstat(handle.fileno()).st_mtime
            text = handle.read(MAX_FILE_BYTES + 1)
        if len(text) > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
        families = list(text_string_to_metric_families(text))
        for family in families:
            if any(s.timestamp is not None for s in family.samples):
                raise ValueError(f"{family.name}: client-side timestamps are not supported")
            if family.name in OWN:
                raise ValueError(f"{family.name}: a name of the textfile collector itself")
        return families, mtime

    def collect(self) -> Iterator[Metric]:
        error = 0
        try:
            names = sorted(n for n in os.listdir(self._directory) if n.endswith(".prom"))
        except OSError as exc:
            self._problem(self._directory, f"{exc.strerror or exc}")
            names, error = [], 1
        else:
            self._problem(self._directory, None)
        merged: dict[str, Metric] = {}
        sources: dict[str, list[str]] = {}  # the files each family came from
        mtimes = GaugeMetricFamily(
            OWN[0], "Unixtime mtime of textfiles successfully read.", labels=["file"]
        )
        for name in names:
            path = os.path.join(self._directory, name)
            try:
                families, mtime = self._read(path)
                for family in families:
                    first = merged.get(family.name)
                    if first is not None and first.type != family.type:
                        raise ValueError(
                            f"{family.name}: type {family.type}, {first.type} in an earlier file"
                        )
            except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
                self._problem(path, f"{type(exc).__name__}: {exc}")
                error = 1
                continue
            self._problem(path, None)
            for family in families:
                first = merged.setdefault(family.name, family)
                if first is not family:
                    first.samples.extend(family.samples)
                    first.documentation = first.documentation or family.documentation
                sources.setdefault(family.name, []).append(path)
            mtimes.add_metric([path], mtime)
        for name, family in merged.items():
            if not family.documentation:  # node_exporter's words for a family without HELP
                family.documentation = f"Metric read from {', '.join(sources[name])}"
        yield from merged.values()
        if names:
            yield mtimes
        yield GaugeMetricFamily(
            OWN[1], "1 if there was an error opening or reading a file, 0 otherwise", value=error
        )
