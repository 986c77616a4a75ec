"""Host checks for ``system-info-collector check``: each enabled collector's source (its
declared probe), the root prefix, the hostname."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from system_info_collector.agent import resolve_hostname
from system_info_collector.config import Settings
from system_info_collector.errors import ProviderError
from system_info_collector.providers import COLLECTORS
from system_info_collector.sinks import CheckResult


def host_checks(settings: Settings) -> list[CheckResult]:
    paths = settings.host_paths
    results: list[CheckResult] = []

    def attempt(name: str, fn: Callable[[], str]) -> None:
        try:
            detail = fn()
        except ProviderError as exc:
            results.append(CheckResult(name, False, str(exc)))
        else:
            results.append(CheckResult(name, True, str(detail)))

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

    for name in settings.collectors:  # each enabled collector's own check
        label, probe = COLLECTORS[name].probe
        attempt(label, functools.partial(probe, paths, settings.collector(name)))
    attempt("host root", root)
    results.append(CheckResult("hostname", True, resolve_hostname(settings)))
    return results
