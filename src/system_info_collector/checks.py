"""Host checks for ``system-info-collector check``: procfs files, mount table, root prefix."""

from __future__ import annotations

import os

from system_info_collector.agent import resolve_hostname
from system_info_collector.config import Settings
from system_info_collector.errors import ProviderError
from system_info_collector.providers._read import read_text
from system_info_collector.providers.cpu import parse_stat
from system_info_collector.providers.disk import parse_mountinfo, select_mounts
from system_info_collector.providers.diskio import parse_diskstats
from system_info_collector.providers.memory import parse_meminfo
from system_info_collector.sinks import CheckResult


def host_checks(settings: Settings) -> list[CheckResult]:
    paths = settings.host_paths
    results: list[CheckResult] = []

    def attempt(name: str, fn: object) -> None:
        try:
            detail = fn()  # type: ignore[operator]
        except ProviderError as exc:
            results.append(CheckResult(name, False, str(exc)))
        else:
            results.append(CheckResult(name, True, str(detail)))

    def stat() -> str:
        cpus = parse_stat(read_text(paths.proc_path("stat")), paths.proc_path("stat"))
        return f"{paths.proc_path('stat')} readable, {len(cpus) - 1} CPUs"

    def meminfo() -> str:
        info = parse_meminfo(read_text(paths.proc_path("meminfo")), paths.proc_path("meminfo"))
        return f"{paths.proc_path('meminfo')} readable, MemTotal {info['MemTotal']} bytes"

    def diskstats() -> str:
        path = paths.proc_path("diskstats")
        devices = parse_diskstats(read_text(path), path)
        kept = [d for d in devices if not settings.diskio_devices_exclude.search(d)]
        return f"{path} readable, {len(kept)} devices after filters ({', '.join(kept[:8])})"

    def mounts() -> str:
        path = paths.proc_path("1", "mountinfo")
        table = parse_mountinfo(read_text(path), path)
        kept = select_mounts(
            table, settings.disk_mountpoints_exclude, settings.disk_fstypes_exclude
        )
        names = ", ".join(m.mountpoint for m in kept[:8])
        return f"{path} readable, {len(table)} mounts, {len(kept)} after filters ({names})"

    def root() -> str:
        path = paths.root_path("/")
        if not os.path.isdir(path):
            raise ProviderError(f"host root {path} is not a directory (SIC_HOST_ROOT)")
        try:
            os.statvfs(path)
        except OSError as exc:
            raise ProviderError(f"statvfs({path}) failed: {exc.strerror}") from exc
        if paths.proc != "/proc" and paths.root in ("", "/"):
            raise ProviderError(
                f"SIC_HOST_PROC is {paths.proc} but SIC_HOST_ROOT is /: mount points of the host "
                "would be measured in this container's filesystem; mount the host's / and set "
                "SIC_HOST_ROOT"
            )
        return f"host root {path} usable"

    attempt("proc stat", stat)
    attempt("proc meminfo", meminfo)
    attempt("proc diskstats", diskstats)
    attempt("mount table", mounts)
    attempt("host root", root)
    results.append(CheckResult("hostname", True, resolve_hostname(settings)))
    return results
