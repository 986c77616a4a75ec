"""A synthetic big host: a procfs (and host root) with many CPUs, disks and mounts, for tests
of what the agent costs on hosts larger than the one running the tests.

The files are real files the real providers read; the mount points are real directories under
the host root, so every ``statvfs`` is a real system call.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import PROC_FIXTURES


def make_big_host(directory: Path, *, cpus: int, disks: int, mounts: int) -> tuple[Path, Path]:
    """Write ``<directory>/proc`` and ``<directory>/root``; returns both."""
    proc, root = directory / "proc", directory / "root"
    shutil.copytree(PROC_FIXTURES / "basic", proc, ignore=shutil.ignore_patterns("expected*"))
    line = "{name} 4705 356 2201 190000 2300 0 130 0 0 0\n"
    (proc / "stat").write_text(
        line.format(name="cpu ")
        + "".join(line.format(name=f"cpu{i}") for i in range(cpus))
        + "intr 1\nctxt 1\nbtime 1700000000\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n"
    )
    (proc / "diskstats").write_text(
        "".join(f" 8 {i} sd{i} 100 0 800 10 200 0 1600 20 0 30 30 0 0 0 0\n" for i in range(disks))
    )
    rows = ["22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"]
    for i in range(mounts):
        (root / "mnt" / f"m{i}").mkdir(parents=True)
        rows.append(f"{100 + i} 22 9:{i} / /mnt/m{i} rw,relatime - ext4 /dev/md{i} rw\n")
    (proc / "1" / "mountinfo").write_text("".join(rows))
    return proc, root
