"""Protocol counters of the host's network namespace (optional collector): the fields of
node_exporter's ``netstat`` collector with its default field filter.

``<proc>/1/net/snmp`` (Ip, Icmp, Tcp, Udp, UdpLite: a header line of names, then a line of
values), ``<proc>/1/net/netstat`` (TcpExt, IpExt: the same layout) and ``<proc>/1/net/snmp6``
(one ``Ip6InOctets  123`` pair a line) -- PID 1's namespace, with the net collector's once-said
fallback. Each field is node_exporter's ``<Protocol>_<Name>`` snake-cased, with ``_total`` for
the counters (all but ``Ip_Forwarding``, 1 forwarding / 2 not, and ``Tcp_CurrEstab``): TCP
retransmits, listen-queue overflows, resets, UDP buffer errors... A counter this kernel does not
have (no IPv6: every ``*6`` one) is 0, said once at start.
"""

from __future__ import annotations

import re

from system_info_collector.collector import Collector, Measurement, NoSettings, count
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.model import Sample
from system_info_collector.providers._counters import one_sample, say_missing
from system_info_collector.providers._read import ProcFile
from system_info_collector.providers.net import open_host_net

# node_exporter 1.5's default --collector.netstat.fields, as the names a 6.x kernel has
KEYS: tuple[tuple[str, str], ...] = (
    *(("Ip", k) for k in ("Forwarding",)),
    *(("IpExt", k) for k in ("InOctets", "OutOctets")),
    *(("Ip6", k) for k in ("InOctets", "OutOctets")),
    *(("Icmp", k) for k in ("InMsgs", "OutMsgs", "InErrors")),
    *(("Icmp6", k) for k in ("InMsgs", "OutMsgs", "InErrors")),
    *(
        ("Tcp", k)
        for k in (
            "ActiveOpens",
            "PassiveOpens",
            "InSegs",
            "OutSegs",
            "RetransSegs",
            "OutRsts",
            "InErrs",
            "CurrEstab",
        )
    ),
    *(
        ("TcpExt", k)
        for k in (
            "ListenOverflows",
            "ListenDrops",
            "SyncookiesSent",
            "SyncookiesRecv",
            "SyncookiesFailed",
            "TCPSynRetrans",
            "TCPTimeouts",
        )
    ),
    *(
        (proto, k)
        for proto in ("Udp", "Udp6")
        for k in (
            "InDatagrams",
            "OutDatagrams",
            "NoPorts",
            "InErrors",
            "RcvbufErrors",
            "SndbufErrors",
        )
    ),
    ("UdpLite", "InErrors"),
    ("UdpLite6", "InErrors"),
)
_GAUGES = {("Ip", "Forwarding"), ("Tcp", "CurrEstab")}
_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def field_name(proto: str, key: str) -> str:
    """``("TcpExt", "TCPSynRetrans")`` -> ``tcp_ext_tcp_syn_retrans_total``."""
    name = _SNAKE.sub("_", f"{proto}_{key}").lower()
    return name if (proto, key) in _GAUGES else name + "_total"


FIELDS = {(proto, key): field_name(proto, key) for proto, key in KEYS}

MEASUREMENT = Measurement(
    name="netstat",
    entity=(),
    labels=(),
    fields=tuple(
        count(name, f"{proto} {key} (net/{'snmp6' if proto.endswith('6') else 'snmp, netstat'})")
        for (proto, key), name in FIELDS.items()
    ),
    help="protocol counters of the host's namespace (<proc>/1/net/snmp, netstat, snmp6)",
)


def parse_pairs(text: str, path: str) -> dict[tuple[str, str], int]:
    """``{(protocol, name): value}`` of a snmp/netstat file (header line, value line)."""
    values: dict[tuple[str, str], int] = {}
    lines = text.splitlines()
    for lineno in range(0, len(lines) - 1, 2):
        head, _, names = lines[lineno].partition(":")
        again, _, numbers = lines[lineno + 1].partition(":")
        if head != again:
            raise ProviderError(f"{path}: line {lineno + 2}: expected the values of {head!r}")
        keys, nums = names.split(), numbers.split()
        if len(keys) != len(nums):
            raise ProviderError(f"{path}: line {lineno + 2}: {len(keys)} names, {len(nums)} values")
        for key, number in zip(keys, nums, strict=True):
            if (head, key) in FIELDS:
                values[(head, key)] = _number(number, path, lineno + 2)
    return values


def parse_snmp6(text: str, path: str) -> dict[tuple[str, str], int]:
    """``{("Udp6", "InDatagrams"): value, …}`` of snmp6 (``Udp6InDatagrams  123`` lines)."""
    values: dict[tuple[str, str], int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if len(parts) != 2:
            raise ProviderError(f"{path}: line {lineno}: expected 'Name value': {line!r}")
        proto, six, key = parts[0].partition("6")
        if (proto + six, key) in FIELDS:
            values[(proto + six, key)] = _number(parts[1], path, lineno)
    return values


def _number(text: str, path: str, lineno: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise ProviderError(f"{path}: line {lineno}: not a number: {text!r}") from None


class NetstatProvider:
    name = "netstat"

    def __init__(self, paths: HostPaths) -> None:
        self._paths = paths
        self._files: list[tuple[ProcFile, bool]] | None = None  # (file, is snmp6)

    def prime(self) -> None:
        if self._files is not None:
            return
        snmp, _ = open_host_net(self._paths, "snmp", self.name)
        directory = snmp.path.rsplit("/", 1)[0]
        files = [(snmp, False)]
        for name, six in (("netstat", False), ("snmp6", True)):
            file = ProcFile(f"{directory}/{name}")
            try:
                file.read()
                files.append((file, six))
            except ProviderError as exc:
                file.close()
                say_missing(self.name, file.path, str(exc), f"its counters are 0 ({name})")
        self._files = files
        found = self._read()
        missing = sorted(f"{p}_{k}" for p, k in set(FIELDS) - set(found))
        if missing:
            say_missing(
                self.name, directory, "this kernel has no such counters", f"0: {', '.join(missing)}"
            )

    def _read(self) -> dict[tuple[str, str], int]:
        values: dict[tuple[str, str], int] = {}
        for file, six in self._files or ():
            text = file.read()
            values.update(parse_snmp6(text, file.path) if six else parse_pairs(text, file.path))
        return values

    def collect(self) -> list[Sample]:
        self.prime()
        values = self._read()
        return [Sample({}, {name: values.get(pk, 0) for pk, name in FIELDS.items()})]

    def close(self) -> None:
        for file, _ in self._files or ():
            file.close()


def _probe(paths: HostPaths, settings: NoSettings) -> str:
    f = one_sample(NetstatProvider(paths)).fields
    return (
        f"snmp readable, {f['tcp_retrans_segs_total']} TCP segments retransmitted, "
        f"{f['tcp_ext_listen_overflows_total']} listen overflows"
    )


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=NoSettings,
    factory=lambda paths, settings, clock: NetstatProvider(paths),
    probe=("proc net/snmp", _probe),
    optional=True,
)
