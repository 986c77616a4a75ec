"""Socket and connection-tracking counts of the host's network namespace (optional collector).

``<proc>/1/net/sockstat`` and ``sockstat6`` (PID 1's namespace, like the net collector, with
the same once-said fallback), the conntrack table size from ``<proc>/1/net/stat/nf_conntrack``
(its ``entries`` column is per namespace: PID 1's) and the limit from
``<proc>/sys/net/netfilter/nf_conntrack_max``. Without the nf_conntrack module (or without
IPv6) those fields are 0, said once at start.
"""

from __future__ import annotations

from system_info_collector.collector import (
    Collector,
    Measurement,
    NoSettings,
    count,
    percent,
)
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import FieldValue, Sample
from system_info_collector.providers._counters import one_sample, say_missing
from system_info_collector.providers._read import ProcFile
from system_info_collector.providers.net import open_host_net

# (sockstat line, key) -> field
_SOCKSTAT = {
    ("sockets", "used"): "sockets_used",
    ("TCP", "inuse"): "tcp_in_use",
    ("TCP", "orphan"): "tcp_orphans",
    ("TCP", "tw"): "tcp_time_wait",
    ("TCP", "alloc"): "tcp_allocated",
    ("TCP", "mem"): "tcp_memory_pages",
    ("UDP", "inuse"): "udp_in_use",
    ("UDP", "mem"): "udp_memory_pages",
}
_SOCKSTAT6 = {("TCP6", "inuse"): "tcp6_in_use", ("UDP6", "inuse"): "udp6_in_use"}

MEASUREMENT = Measurement(
    name="sockets",
    entity=(),
    labels=(),
    fields=(
        count("sockets_used", "sockets in use, all families (sockstat 'sockets: used')"),
        count("tcp_in_use", "TCP sockets in use (IPv4)"),
        count("tcp_orphans", "TCP sockets no longer attached to a process"),
        count("tcp_time_wait", "TCP sockets in TIME_WAIT"),
        count("tcp_allocated", "TCP sockets allocated (all states, IPv4 and IPv6)"),
        count("tcp_memory_pages", "pages of memory used by TCP buffers"),
        count("udp_in_use", "UDP sockets in use (IPv4)"),
        count("udp_memory_pages", "pages of memory used by UDP buffers"),
        count("tcp6_in_use", "TCP sockets in use (IPv6; 0 without IPv6)"),
        count("udp6_in_use", "UDP sockets in use (IPv6; 0 without IPv6)"),
        count("conntrack_entries", "connection-tracking entries (0 without nf_conntrack)"),
        count("conntrack_max", "the table's limit, nf_conntrack_max (0 without nf_conntrack)"),
        percent("conntrack_used_percent", "entries / max (0 without nf_conntrack)"),
    ),
    help="sockets (<proc>/1/net/sockstat{,6}) and conntrack entries of the host's namespace",
)


def parse_sockstat(text: str, wanted: dict[tuple[str, str], str], path: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        label, _, rest = line.partition(":")
        parts = rest.split()
        for key, value in zip(parts[::2], parts[1::2], strict=False):
            field = wanted.get((label, key))
            if field is not None:
                try:
                    values[field] = int(value)
                except ValueError:
                    raise ProviderError(f"{path}: line {lineno}: non-numeric {key}") from None
    missing = sorted(set(wanted.values()) - set(values))
    if missing:
        raise ProviderError(f"{path}: no {', '.join(missing)} (truncated or not sockstat?)")
    return values


def parse_conntrack_stat(text: str, path: str) -> int:
    """The ``entries`` column (hex, the same on every CPU's line) of net/stat/nf_conntrack."""
    lines = text.split("\n", 2)
    try:
        if lines[0].split()[0] != "entries":
            raise ValueError
        return int(lines[1].split()[0], 16)
    except (IndexError, ValueError):
        raise ProviderError(f"{path}: expected an 'entries ...' header and a line") from None


class SocketsProvider:
    name = "sockets"

    def __init__(self, paths: HostPaths) -> None:
        self._paths = paths
        self._files: dict[str, ProcFile | None] | None = None

    def _open(self) -> dict[str, ProcFile | None]:
        sockstat, _ = open_host_net(self._paths, "sockstat", self.name)
        files: dict[str, ProcFile | None] = {"sockstat": sockstat}
        optional = {
            "sockstat6": (sockstat.path + "6", "no IPv6: tcp6/udp6 fields are 0"),
            "conntrack": (
                sockstat.path.rsplit("/", 1)[0] + "/stat/nf_conntrack",
                "no nf_conntrack module: conntrack fields are 0",
            ),
            "conntrack_max": (
                self._paths.proc_path("sys", "net", "netfilter", "nf_conntrack_max"),
                "no nf_conntrack module: conntrack fields are 0",
            ),
        }
        for name, (path, consequence) in optional.items():
            file = ProcFile(path)
            try:
                file.read()
                files[name] = file
            except ProviderError as exc:
                file.close()
                files[name] = None
                if name != "conntrack_max" or files["conntrack"] is not None:
                    say_missing(self.name, path, str(exc), consequence)
        return files

    def prime(self) -> None:
        if self._files is None:
            self._files = self._open()

    def collect(self) -> list[Sample]:
        self.prime()
        files = self._files or {}
        sockstat = files["sockstat"]
        assert sockstat is not None
        fields: dict[str, FieldValue] = dict(
            parse_sockstat(sockstat.read(), _SOCKSTAT, sockstat.path)
        )
        v6 = files.get("sockstat6")
        fields.update(
            parse_sockstat(v6.read(), _SOCKSTAT6, v6.path)
            if v6 is not None
            else dict.fromkeys(_SOCKSTAT6.values(), 0)
        )
        conntrack, limit = files.get("conntrack"), files.get("conntrack_max")
        entries = parse_conntrack_stat(conntrack.read(), conntrack.path) if conntrack else 0
        maximum = 0
        if limit is not None:
            text = limit.read().strip()
            if not text.isdigit():
                raise ProviderError(f"{limit.path}: expected a number: {text[:40]!r}")
            maximum = int(text)
        fields["conntrack_entries"] = entries
        fields["conntrack_max"] = maximum
        fields["conntrack_used_percent"] = 100.0 * entries / maximum if maximum else 0.0
        return [Sample({}, fields)]

    def close(self) -> None:
        for file in (self._files or {}).values():
            if file is not None:
                file.close()


def _probe(paths: HostPaths, settings: NoSettings) -> str:
    f = one_sample(SocketsProvider(paths)).fields
    return (
        f"sockstat readable, {f['tcp_in_use']} TCP sockets in use, "
        f"conntrack {f['conntrack_entries']} of {f['conntrack_max']}"
    )


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=NoSettings,
    factory=lambda paths, settings, clock: SocketsProvider(paths),
    probe=("proc sockstat", _probe),
    optional=True,
)
