"""Every path on the host is built here (like node_exporter's collector/paths.go)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HostPaths:
    """Where the host's procfs, sysfs and root filesystem are visible to this process."""

    proc: str = "/proc"
    sys: str = "/sys"
    root: str = "/"

    def proc_path(self, *parts: str) -> str:
        return os.path.join(self.proc, *parts)

    def sys_path(self, *parts: str) -> str:
        return os.path.join(self.sys, *parts)

    def root_path(self, host_path: str) -> str:
        """The host path ``host_path`` (e.g. a mount point) as seen from here."""
        if self.root in ("", "/"):
            return host_path
        return os.path.join(self.root, host_path.lstrip("/"))
