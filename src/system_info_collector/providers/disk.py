"""Filesystem usage of the host's mounts.

The mount table is ``<proc>/1/mountinfo`` (PID 1's mount namespace: the host's, when the host's
procfs is mounted), never ``<proc>/self/…``, which inside a container is the container's.
Each mount is measured with ``statvfs(<root>/<mountpoint>)``. Network and userspace filesystems
are measured in a daemon thread of their own with a deadline, so one hung NFS or FUSE mount cannot
freeze a tick nor keep the process from exiting (a thread pool's threads are joined at exit): a
mount whose previous call has not returned is skipped until it does, so hung calls never pile up.

The provider keeps its last reading (:attr:`DiskProvider.reading`: every selected mount and
whether it could be measured) for ``/metrics`` (``node_filesystem_readonly``/``device_error``).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass

from system_info_collector.collector import (
    Collector,
    Measurement,
    Option,
    Problem,
    Rules,
    byte_count,
    count,
    percent,
)
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.logging import event
from system_info_collector.model import FieldValue, Sample
from system_info_collector.providers._read import ProcFile, read_text

# node_exporter's defaults (collector/filesystem_linux.go), plus tmpfs, ramfs, erofs, efivarfs…
DEFAULT_MOUNTPOINTS_EXCLUDE = (
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
)
DEFAULT_FSTYPES_EXCLUDE = (
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|"
    r"iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|"
    r"erofs|sysfs|tracefs|tmpfs|ramfs|efivarfs|fuse\.lxcfs|fuse\.gvfsd-fuse|nfsd|shm)$"
)


@dataclass(frozen=True, slots=True)
class DiskSettings:
    mountpoints_exclude: re.Pattern[str] = re.compile(DEFAULT_MOUNTPOINTS_EXCLUDE)
    fstypes_exclude: re.Pattern[str] = re.compile(DEFAULT_FSTYPES_EXCLUDE)
    timeout: float = 0.5


OPTIONS = (
    Option(
        "SIC_DISK_MOUNTPOINTS_EXCLUDE",
        "mountpoints_exclude",
        "regex",
        DEFAULT_MOUNTPOINTS_EXCLUDE,
        "regex of mount points to skip",
        default_doc="node_exporter's: `" + DEFAULT_MOUNTPOINTS_EXCLUDE.replace("|", "\\|") + "`",
    ),
    Option(
        "SIC_DISK_FSTYPES_EXCLUDE",
        "fstypes_exclude",
        "regex",
        DEFAULT_FSTYPES_EXCLUDE,
        "regex of filesystem types to skip",
        default_doc="pseudo/virtual filesystems (node_exporter's list plus `tmpfs`, `ramfs`, "
        "`erofs`, `efivarfs`, …)",
    ),
    Option(
        "SIC_DISK_TIMEOUT",
        "timeout",
        "positive_duration",
        "500ms",
        "deadline (> 0) for `statvfs` of network and FUSE filesystems in one tick; a mount that "
        "does not answer (dead NFS) is skipped until its call returns. Local filesystems are "
        "measured inline",
    ),
)

MEASUREMENT = Measurement(
    name="disk",
    entity=("mountpoint",),
    labels=("device", "fstype"),
    fields=(
        byte_count("total_bytes", "f_blocks * f_frsize"),
        byte_count("used_bytes", "(f_blocks - f_bfree) * f_frsize, as df"),
        byte_count("free_bytes", "f_bfree * f_frsize (includes blocks reserved for root)"),
        byte_count("available_bytes", "f_bavail * f_frsize (what unprivileged users can use)"),
        percent("used_percent", "used / (used + available), as df's Use% before rounding up"),
        count("inodes_total", "f_files"),
        count("inodes_used", "f_files - f_ffree"),
        count("inodes_free", "f_ffree"),
        percent("inodes_used_percent", "inodes used / inodes total (0 if the fs has none)"),
    ),
    help="filesystem usage of the host's mounts (statvfs of <root>/<mountpoint>)",
)

# Filesystems whose statvfs can block on a network or a userspace daemon: measured in a daemon
# thread with a deadline. Local filesystems answer from memory and are measured inline.
REMOTE_FSTYPES = re.compile(
    r"^(nfs4?|cifs|smb3?|smbfs|ceph|glusterfs|9p|afs|lustre|gpfs|beegfs|virtiofs|fuse(\..*)?)$"
)
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class Mount:
    device_id: str  # major:minor
    mountpoint: str  # as the host sees it
    fstype: str
    source: str
    readonly: bool = False  # "ro" in the mount's or the superblock's options


@dataclass(frozen=True, slots=True)
class MountState:
    mount: Mount
    error: bool  # statvfs failed or did not return in time


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo(text: str, path: str = "mountinfo") -> list[Mount]:
    """Mounts from a ``/proc/PID/mountinfo`` file (proc(5))."""
    mounts = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(" ")
        try:
            sep = parts.index("-", 6)
            if len(parts) < sep + 4:
                raise ValueError("missing super options")
            mounts.append(
                Mount(
                    device_id=parts[2],
                    mountpoint=_unescape(parts[4]),
                    fstype=parts[sep + 1],
                    source=_unescape(parts[sep + 2]),
                    readonly="ro" in parts[5].split(",") or "ro" in parts[sep + 3].split(","),
                )
            )
        except (ValueError, IndexError):
            raise ProviderError(f"{path}: line {lineno}: not a mountinfo line: {line!r}") from None
    if not mounts:
        raise ProviderError(f"{path}: empty mount table")
    return mounts


def select_mounts(
    mounts: list[Mount], mountpoints_exclude: re.Pattern[str], fstypes_exclude: re.Pattern[str]
) -> list[Mount]:
    """Mounts that pass the filters, one per device (the shortest mount point wins)."""
    by_device: dict[str, Mount] = {}
    for mount in mounts:
        if mountpoints_exclude.search(mount.mountpoint) or fstypes_exclude.search(mount.fstype):
            continue
        seen = by_device.get(mount.device_id)
        if seen is None or len(mount.mountpoint) < len(seen.mountpoint):
            by_device[mount.device_id] = mount
    return sorted(by_device.values(), key=lambda m: m.mountpoint)


def usage_fields(st: os.statvfs_result) -> dict[str, float | int]:
    total = st.f_blocks * st.f_frsize
    free = st.f_bfree * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    used = total - free
    inodes_used = st.f_files - st.f_ffree
    return {
        "total_bytes": total,
        "used_bytes": used,
        "free_bytes": free,
        "available_bytes": avail,
        "used_percent": 100.0 * used / (used + avail) if used + avail else 0.0,
        "inodes_total": st.f_files,
        "inodes_used": inodes_used,
        "inodes_free": st.f_ffree,
        "inodes_used_percent": 100.0 * inodes_used / st.f_files if st.f_files else 0.0,
    }


Statvfs = Callable[[str], os.statvfs_result]


def _statvfs_into(future: Future[os.statvfs_result], path: str, statvfs: Statvfs) -> None:
    try:
        future.set_result(statvfs(path))
    except OSError as exc:
        future.set_exception(exc)


class _Answered:
    """The outcome of an inline ``statvfs``, shaped like a finished Future (a real one costs a
    lock and a condition per mount per tick)."""

    __slots__ = ("_error", "_value")

    def __init__(self, path: str, statvfs: Statvfs) -> None:
        self._value: os.statvfs_result | None = None
        self._error: OSError | None = None
        try:
            self._value = statvfs(path)
        except OSError as exc:
            self._error = exc

    def done(self) -> bool:
        return True

    def result(self) -> os.statvfs_result:
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


def _background_statvfs(path: str, statvfs: Statvfs) -> Future[os.statvfs_result]:
    """``statvfs(path)`` in a daemon thread: a call that never returns cannot block the exit."""
    future: Future[os.statvfs_result] = Future()
    threading.Thread(
        target=_statvfs_into, args=(future, path, statvfs), name="statvfs", daemon=True
    ).start()
    return future


class DiskProvider:
    name = "disk"

    def __init__(
        self,
        paths: HostPaths,
        *,
        mountpoints_exclude: re.Pattern[str],
        fstypes_exclude: re.Pattern[str],
        timeout: float = 0.5,
        statvfs: Statvfs = os.statvfs,
    ) -> None:
        self._paths = paths
        self._mountinfo = paths.proc_path("1", "mountinfo")
        self._file = ProcFile(self._mountinfo)
        self._table: tuple[str, list[Mount]] = ("", [])
        # per selected mount, worked out when the table changes: where to statvfs it, whether in
        # a thread of its own (network/FUSE), its tags (kept: every tick's records share them)
        self._plan: list[tuple[Mount, str, bool, dict[str, str]]] = []
        self._mountpoints_exclude = mountpoints_exclude
        self._fstypes_exclude = fstypes_exclude
        self._timeout = timeout
        self._statvfs = statvfs
        self._pending: dict[str, Future[os.statvfs_result]] = {}
        self._failing: set[str] = set()
        self.failed_parts = 0  # mounts the last collect() could not measure
        self.reading: list[MountState] = []  # the last collect()'s mounts (replaced whole)

    def mounts(self) -> list[Mount]:
        text = self._file.read()
        if text != self._table[0]:  # the mount table rarely changes: parse only when it does
            mounts = parse_mountinfo(text, self._mountinfo)
            selected = select_mounts(mounts, self._mountpoints_exclude, self._fstypes_exclude)
            self._table = (text, selected)
            self._plan = [
                (
                    m,
                    self._paths.root_path(m.mountpoint),
                    bool(REMOTE_FSTYPES.match(m.fstype)),
                    {"mountpoint": m.mountpoint, "device": m.source, "fstype": m.fstype},
                )
                for m in selected
            ]
        return self._table[1]

    def prime(self) -> None:
        pass

    def collect(self) -> list[Sample]:
        self.mounts()
        plan = self._plan
        futures: dict[str, Future[os.statvfs_result] | _Answered] = {}
        for mount, path, remote, _ in plan:
            if not remote:
                futures[mount.mountpoint] = _Answered(path, self._statvfs)
                continue
            pending = self._pending.get(mount.mountpoint)
            if pending is not None and not pending.done():
                continue  # still hung from an earlier tick: do not pile up calls
            futures[mount.mountpoint] = _background_statvfs(path, self._statvfs)
        running = [f for f in futures.values() if isinstance(f, Future) and not f.done()]
        if running:
            wait(running, timeout=self._timeout)
        samples = []
        states = []
        self.failed_parts = 0
        for mount, _, _, tags in plan:
            future = futures.get(mount.mountpoint)
            if future is None or not future.done():
                if isinstance(future, Future):
                    self._pending[mount.mountpoint] = future
                self._fail(mount, f"statvfs did not return within {self._timeout:g}s")
                states.append(MountState(mount, error=True))
                continue
            self._pending.pop(mount.mountpoint, None)
            try:
                st = future.result()
            except OSError as exc:
                self._fail(mount, exc.strerror or str(exc))
                states.append(MountState(mount, error=True))
                continue
            self._recover(mount)
            if st.f_blocks == 0:
                continue  # pseudo filesystem without blocks
            samples.append(Sample(tags, usage_fields(st)))
            states.append(MountState(mount, error=False))
        self.reading = states
        return samples

    def _fail(self, mount: Mount, reason: str) -> None:
        self.failed_parts += 1
        if mount.mountpoint not in self._failing:
            self._failing.add(mount.mountpoint)
            event(
                "WARNING",
                "disk_mount_failed",
                "cannot measure a mount; skipping it until it recovers",
                mountpoint=mount.mountpoint,
                path=self._paths.root_path(mount.mountpoint),
                fstype=mount.fstype,
                reason=reason,
            )

    def _recover(self, mount: Mount) -> None:
        if mount.mountpoint in self._failing:
            self._failing.discard(mount.mountpoint)
            event(
                "INFO",
                "disk_mount_recovered",
                "mount measurable again",
                mountpoint=mount.mountpoint,
            )

    def close(self) -> None:
        self._file.close()


def _consistent(fields: Mapping[str, FieldValue]) -> Problem | None:
    if fields["used_bytes"] + fields["free_bytes"] != fields["total_bytes"]:
        return "used_bytes", fields["used_bytes"], "used_plus_free_total"
    return None


def _probe(paths: HostPaths, settings: DiskSettings) -> str:
    path = paths.proc_path("1", "mountinfo")
    table = parse_mountinfo(read_text(path), path)
    kept = select_mounts(table, settings.mountpoints_exclude, settings.fstypes_exclude)
    names = ", ".join(m.mountpoint for m in kept[:8])
    return f"{path} readable, {len(table)} mounts, {len(kept)} after filters ({names})"


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=DiskSettings,
    factory=lambda paths, settings, clock: DiskProvider(
        paths,
        mountpoints_exclude=settings.mountpoints_exclude,
        fstypes_exclude=settings.fstypes_exclude,
        timeout=settings.timeout,
    ),
    probe=("mount table", _probe),
    options=OPTIONS,
    rules=Rules(
        not_above=(
            ("used_bytes", "total_bytes"),
            ("free_bytes", "total_bytes"),
            ("available_bytes", "free_bytes"),
            ("inodes_used", "inodes_total"),
            ("inodes_free", "inodes_total"),
        ),
        check=_consistent,
    ),
)
