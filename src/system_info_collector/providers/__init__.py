"""Providers read one measurement from the host. One module each; registered in a literal dict."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from system_info_collector.config import Settings
from system_info_collector.model import Sample


class Provider(Protocol):
    """One measurement. A provider may also keep ``failed_parts``: how many parts of its last
    ``collect()`` failed while the rest was collected (counted by the agent)."""

    name: str

    def prime(self) -> None:
        """Take the first reading of counters that need two (no-op for gauges)."""

    def collect(self) -> Iterable[Sample]:
        """One reading; raises :class:`~system_info_collector.errors.ProviderError`."""
        ...

    def close(self) -> None: ...


def _cpu(settings: Settings) -> Provider:
    from system_info_collector.providers.cpu import CpuProvider

    return CpuProvider(settings.host_paths)


def _memory(settings: Settings) -> Provider:
    from system_info_collector.providers.memory import MemoryProvider

    return MemoryProvider(settings.host_paths)


def _disk(settings: Settings) -> Provider:
    from system_info_collector.providers.disk import DiskProvider

    return DiskProvider(
        settings.host_paths,
        mountpoints_exclude=settings.disk_mountpoints_exclude,
        fstypes_exclude=settings.disk_fstypes_exclude,
        timeout=settings.disk_timeout,
    )


def _diskio(settings: Settings) -> Provider:
    from system_info_collector.providers.diskio import DiskIOProvider

    return DiskIOProvider(settings.host_paths, devices_exclude=settings.diskio_devices_exclude)


REGISTRY: dict[str, Callable[[Settings], Provider]] = {
    "cpu": _cpu,
    "memory": _memory,
    "disk": _disk,
    "diskio": _diskio,
}


def build_providers(settings: Settings) -> list[Provider]:
    return [REGISTRY[name](settings) for name in settings.collectors]
