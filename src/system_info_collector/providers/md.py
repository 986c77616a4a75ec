"""Linux software RAID (md) arrays from ``<proc>/mdstat``: one record per array.

Read as node_exporter's ``mdadm`` collector reads it (prometheus/procfs ``MDStat``, which
node_exporter 1.5 uses), so that its families and node-mixin's RAID alerts come out the same:

- a block starts at a line ``mdN : <state> [personality] <component>[n][(F)|(S)] …``; the
  state is the third word (``active``, ``inactive``); ``(F)`` marks a failed component,
  ``(S)`` a spare;
- the next line gives the size in 1 KiB blocks and, for redundant levels,
  ``[required/active] [U_…]`` (each ``_`` a member that is down); raid0 and linear arrays have
  no such pair: every bracketed component counts as required and active; an inactive array has
  none;
- a ``recovery``, ``resync`` or ``check`` line (after an optional ``bitmap`` line) turns the
  state into ``recovering``, ``resync`` or ``check`` and gives the blocks done so far, the
  speed and the minutes left; ``resync=PENDING``/``DELAYED`` means none done yet.

No ``mdstat`` file (no md driver loaded) means no arrays: no record, not a failure (said once at
start, INFO ``collector_source_missing``); the file is looked for again every tick, so arrays
assembled later (the driver loaded then) are reported from their first tick.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from system_info_collector.collector import (
    Collector,
    Measurement,
    NoSettings,
    Rules,
    byte_count,
    count,
    percent,
    rate,
    seconds,
)
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import Sample
from system_info_collector.providers._counters import say_missing
from system_info_collector.providers._read import ProcFile, read_text

MEASUREMENT = Measurement(
    name="md",
    entity=("device",),
    labels=("state",),
    fields=(
        count("disks_required", "members the array is made of ([n/m]: n; raid0/linear: all)"),
        count("disks_active", "members in use ([n/m]: m); fewer than required: degraded"),
        count("disks_failed", "components marked (F)"),
        count("disks_spare", "components marked (S)"),
        count("disks_down", "members shown down ('_' in [U_])"),
        byte_count("size_bytes", "the array's size (1 KiB blocks of mdstat)"),
        byte_count(
            "synced_bytes",
            "done by the running recovery/resync/check, as mdstat counts it (a member's blocks "
            "for raid4/5/6/10); the size when none runs, 0 while one is pending",
        ),
        percent("synced_percent", "progress of the running recovery/resync/check (else 100)"),
        rate("sync_speed_bytes_per_second", "speed of the running recovery/resync/check"),
        seconds("sync_remaining_seconds", "the kernel's estimate of the time it still needs"),
    ),
    help="software RAID arrays (<proc>/mdstat); state: active, inactive, recovering, resync, check",
)

_STATUS = re.compile(r"(\d+) blocks .*\[(\d+)/(\d+)\] \[([U_]+)\]")
_DONE = re.compile(r"\((\d+)/(\d+)\)")
_PERCENT = re.compile(r"= *([\d.]+)%")
_FINISH = re.compile(r"finish=([\d.]+)min")
_SPEED = re.compile(r"speed=([\d.]+)K")
_KIB = 1024


@dataclass(frozen=True, slots=True)
class MdArray:
    device: str
    state: str
    required: int
    active: int
    failed: int
    spare: int
    down: int
    blocks: int
    synced_blocks: int
    synced_percent: float
    speed_kib: float  # KiB/s
    finish_minutes: float


def parse_mdstat(text: str, path: str = "mdstat") -> list[MdArray]:
    """Every array of an mdstat file (module docstring); ProviderError names the broken line."""
    lines = text.split("\n")
    arrays = []
    for i, line in enumerate(lines):
        if not line.strip() or line[0] in " \t" or line.startswith(("Personalities", "unused")):
            continue
        words = line.split()
        if len(words) < 3:
            raise ProviderError(f"{path}: line {i + 1}: expected 'mdN : state …': {line!r}")
        device, state = words[0], words[2]
        if len(lines) <= i + 3:
            raise ProviderError(f"{path}: line {i + 1}: {device} is missing its status lines")
        active, required, down, blocks = _status(line, lines[i + 1], path, i + 2)
        sync = lines[i + 3] if "bitmap" in lines[i + 2] else lines[i + 2]
        synced, progress, speed, finish = blocks, 100.0, 0.0, 0.0
        if "recovery" in sync or "resync" in sync or "check" in sync:
            state = "recovering" if "recovery" in sync else "check" if "check" in sync else "resync"
            if "PENDING" in sync or "DELAYED" in sync:
                synced, progress = 0, 0.0
            else:
                synced, progress, speed, finish = _progress(sync, path, device)
        arrays.append(
            MdArray(
                device,
                state,
                required,
                active,
                line.count("(F)"),
                line.count("(S)"),
                down,
                blocks,
                synced,
                progress,
                speed,
                finish,
            )
        )
    return arrays


def _status(device_line: str, status: str, path: str, lineno: int) -> tuple[int, int, int, int]:
    """(active, required, down, blocks) from an array's first two lines."""
    words = status.split()
    if not words or not words[0].isdigit():
        raise ProviderError(f"{path}: line {lineno}: expected '<blocks> blocks …': {status!r}")
    blocks = int(words[0])
    if "raid0" in device_line or "linear" in device_line:
        members = device_line.count("[")
        return members, members, 0, blocks
    if "inactive" in device_line:
        return 0, 0, 0, blocks
    found = _STATUS.search(status)
    if found is None:
        raise ProviderError(f"{path}: line {lineno}: no '[n/m] [U_]' in {status!r}")
    return int(found[3]), int(found[2]), found[4].count("_"), blocks


def _progress(line: str, path: str, device: str) -> tuple[int, float, float, float]:
    """(blocks done, percent done, KiB/s, minutes left) of a recovery/resync/check line."""
    done, pct = _DONE.search(line), _PERCENT.search(line)
    finish, speed = _FINISH.search(line), _SPEED.search(line)
    if done is None or pct is None or finish is None or speed is None:
        raise ProviderError(f"{path}: {device}: unexpected progress line {line.strip()!r}")
    total = int(done[2])
    progress = min(100.0, 100.0 * int(done[1]) / total) if total else 0.0
    try:
        return int(done[1]), progress, float(speed[1]), float(finish[1])
    except ValueError:  # "1.2.3": the pattern takes digits and dots
        raise ProviderError(
            f"{path}: {device}: unexpected progress line {line.strip()!r}"
        ) from None


def sample(array: MdArray) -> Sample:
    size = array.blocks * _KIB
    synced = array.synced_blocks * _KIB
    return Sample(
        {"device": array.device, "state": array.state},
        {
            "disks_required": array.required,
            "disks_active": array.active,
            "disks_failed": array.failed,
            "disks_spare": array.spare,
            "disks_down": array.down,
            "size_bytes": size,
            "synced_bytes": synced,
            "synced_percent": array.synced_percent,
            "sync_speed_bytes_per_second": array.speed_kib * _KIB,
            "sync_remaining_seconds": array.finish_minutes * 60,
        },
    )


class MdProvider:
    name = "md"

    def __init__(self, paths: HostPaths) -> None:
        self._file = ProcFile(paths.proc_path("mdstat"))

    def prime(self) -> None:
        if not os.path.exists(self._file.path):
            say_missing(
                "md",
                self._file.path,
                "no md (software RAID) driver loaded",
                "no software RAID arrays to report (looked for again every tick)",
            )

    def collect(self) -> list[Sample]:
        try:
            text = self._file.read()
        except ProviderError:
            if not os.path.exists(self._file.path):
                return []  # no md driver: no arrays
            raise
        return [sample(a) for a in parse_mdstat(text, self._file.path)]

    def close(self) -> None:
        self._file.close()


def _probe(paths: HostPaths, settings: NoSettings) -> str:
    path = paths.proc_path("mdstat")
    if not os.path.exists(path):
        return f"{path} absent: no md driver, no arrays"
    arrays = parse_mdstat(read_text(path), path)
    degraded = sum(1 for a in arrays if a.active < a.required or a.failed)
    return f"{path} readable, {len(arrays)} arrays, {degraded} degraded or with failed disks"


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=NoSettings,
    factory=lambda paths, settings, clock: MdProvider(paths),
    probe=("proc mdstat", _probe),
    rules=Rules(not_above=(("synced_bytes", "size_bytes"),)),
)
