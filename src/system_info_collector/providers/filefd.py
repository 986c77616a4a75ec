"""File handles of the whole host from ``<proc>/sys/fs/file-nr`` (not namespaced)."""

from __future__ import annotations

from system_info_collector.collector import Collector, Measurement, NoSettings, count, percent
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import Sample
from system_info_collector.providers._read import ProcFile, read_text

MEASUREMENT = Measurement(
    name="filefd",
    entity=(),
    labels=(),
    fields=(
        count("allocated", "file handles allocated (first number of file-nr)"),
        count("maximum", "the limit, fs.file-max (third number of file-nr)"),
        percent("used_percent", "allocated / maximum"),
    ),
    help="file handles of the host (<proc>/sys/fs/file-nr)",
)


def parse_file_nr(text: str, path: str = "file-nr") -> tuple[int, int]:
    """(allocated, maximum); the middle number (free handles) is 0 since Linux 2.6."""
    parts = text.split()
    try:
        if len(parts) != 3:
            raise ValueError
        return int(parts[0]), int(parts[2])
    except ValueError:
        raise ProviderError(f"{path}: expected 'allocated free maximum': {text[:80]!r}") from None


class FilefdProvider:
    name = "filefd"

    def __init__(self, paths: HostPaths) -> None:
        self._file = ProcFile(paths.proc_path("sys", "fs", "file-nr"))

    def prime(self) -> None:
        pass

    def collect(self) -> list[Sample]:
        allocated, maximum = parse_file_nr(self._file.read(), self._file.path)
        used = 100.0 * allocated / maximum if maximum else 0.0
        return [Sample({}, {"allocated": allocated, "maximum": maximum, "used_percent": used})]

    def close(self) -> None:
        self._file.close()


def _probe(paths: HostPaths, settings: NoSettings) -> str:
    path = paths.proc_path("sys", "fs", "file-nr")
    allocated, maximum = parse_file_nr(read_text(path), path)
    return f"{path} readable, {allocated} of {maximum} file handles allocated"


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=NoSettings,
    factory=lambda paths, settings, clock: FilefdProvider(paths),
    probe=("proc file-nr", _probe),
)
