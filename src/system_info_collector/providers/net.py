"""Network interface counters and rates of the host's network namespace.

``<proc>/net`` is a link to ``self/net``: inside a container it is the *container's* network
namespace even through the host's procfs. So the counters come from ``<proc>/1/net/dev``, the
namespace of the host's PID 1 when the procfs is the host's -- ``-v /proc:/host/proc:ro``
suffices, without ``--network host``. When PID 1's files cannot be read (a rootless engine, a
procfs mounted with ``hidepid``), the provider says so once (WARNING
``net_host_namespace_unavailable``) and reads ``<proc>/self/net/dev``: this process's own
namespace, which is the host's only with ``--network host``.

Speed, operational state and MTU come from ``<sys>/class/net/<interface>/`` where present
(the host's sysfs shows the host's interfaces); an interface without them reports 0.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from system_info_collector.collector import (
    Clock,
    Collector,
    Measurement,
    Option,
    Problem,
    Rules,
    byte_count,
    count,
    rate,
)
from system_info_collector.errors import ProviderError
from system_info_collector.hostpaths import HostPaths
from system_info_collector.logging import event
from system_info_collector.model import FieldValue, Sample
from system_info_collector.providers._counters import Previous, deltas, say_missing
from system_info_collector.providers._read import ProcFile

# Like node_exporter's usual deployments (kube-prometheus) and Telegraf's net input: loopback,
# container veth pairs, CNI bridges and overlays (Calico, Flannel, Cilium, Weave, Docker, libvirt,
# VXLAN/Geneve/IPIP tunnels, kube-proxy's IPVS dummy) and the 15-hex-digit names of some CNIs.
DEFAULT_INTERFACES_EXCLUDE = (
    r"^(lo|veth.*|cali.*|flannel.*|cni.*|cilium_.*|lxc.*|weave.*|docker.*|br-.*|virbr.*|"
    r"vxlan.*|genev_sys_.*|tunl.*|kube-ipvs.*|nodelocaldns|[a-f0-9]{15})$"
)

_RECEIVE = (
    "bytes",
    "packets",
    "errors",
    "dropped",
    "fifo_errors",
    "frame_errors",
    "compressed",
    "multicast",
)
_TRANSMIT = (
    "bytes",
    "packets",
    "errors",
    "dropped",
    "fifo_errors",
    "collisions",
    "carrier_errors",
    "compressed",
)
_COUNTERS = (*(f"receive_{c}" for c in _RECEIVE), *(f"transmit_{c}" for c in _TRANSMIT))
_RATES = ("bytes", "packets", "errors", "dropped")  # per direction, per second
_TOTAL_NAMES = tuple(f"{c}_total" for c in _COUNTERS)
# (field, index of its counter), in the fields' order: per rate, receive then transmit
_RATE_COLUMNS = tuple(
    (f"{direction}_{r}_per_second", _COUNTERS.index(f"{direction}_{r}"))
    for r in _RATES
    for direction in ("receive", "transmit")
)


@dataclass(frozen=True, slots=True)
class NetSettings:
    interfaces_exclude: re.Pattern[str] = re.compile(DEFAULT_INTERFACES_EXCLUDE)


OPTIONS = (
    Option(
        "SIC_NET_INTERFACES_EXCLUDE",
        "interfaces_exclude",
        "regex",
        DEFAULT_INTERFACES_EXCLUDE,
        "regex of network interfaces to skip (`^$`: none)",
        default_doc="`lo`, container and CNI interfaces: `veth*`, `cali*`, `flannel*`, `cni*`, "
        "`cilium_*`, `lxc*`, `weave*`, `docker*`, `br-*`, `virbr*`, `vxlan*`, `genev_sys_*`, "
        "`tunl*`, `kube-ipvs*`, `nodelocaldns`, 15 hex digits",
    ),
)


def _counter_help(name: str) -> str:
    direction, _, what = name.partition("_")
    return f"{what.replace('_', ' ')} {'received' if direction == 'receive' else 'sent'}"


MEASUREMENT = Measurement(
    name="net",
    entity=("interface",),
    labels=(),
    fields=(
        *(
            (byte_count if name.endswith("_bytes") else count)(f"{name}_total", _counter_help(name))
            for name in _COUNTERS
        ),
        *(
            rate(f"{d}_{r}_per_second", f"{r} {verb} per second since the previous reading")
            for r in _RATES
            for d, verb in (("receive", "received"), ("transmit", "sent"))
        ),
        rate("speed_bytes_per_second", "link speed (<sys>/class/net/*/speed); 0 if unknown"),
        count("up", "1 if operstate is up, else 0 (also when <sys> has no such interface)"),
        byte_count("mtu_bytes", "MTU (<sys>/class/net/*/mtu); 0 if unknown"),
    ),
    help="network interfaces of the host's namespace (<proc>/1/net/dev, <sys>/class/net)",
)


def parse_net_dev(text: str, path: str = "net/dev") -> dict[str, tuple[int, ...]]:
    """``{"eth0": (16 counters in /proc/net/dev order)}`` from the text of /proc/net/dev."""
    lines = text.splitlines()
    if len(lines) < 2 or lines[1].count("|") != 2:
        raise ProviderError(f"{path}: no 'face |bytes ...' header (is this a net/dev file?)")
    interfaces: dict[str, tuple[int, ...]] = {}
    for lineno, line in enumerate(lines[2:], 3):
        name, sep, rest = line.partition(":")
        values = rest.split()
        if not sep or len(values) != len(_COUNTERS):
            raise ProviderError(
                f"{path}: line {lineno}: expected 'name: {len(_COUNTERS)} counters': {line!r}"
            )
        try:
            interfaces[name.strip()] = tuple(int(v) for v in values)
        except ValueError:
            raise ProviderError(f"{path}: line {lineno}: non-numeric counter: {line!r}") from None
    return interfaces


def _sysfs_int(path: str) -> int | None:
    try:
        with open(path, "rb") as handle:
            return int(handle.read().strip() or b"-1")
    except (OSError, ValueError):  # speed of a down or virtual link: EINVAL
        return None


def _sysfs_text(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("ascii", "replace").strip()
    except OSError:
        return None


def link_fields(paths: HostPaths, interface: str) -> dict[str, FieldValue]:
    base = paths.sys_path("class", "net", interface)
    speed = _sysfs_int(os.path.join(base, "speed"))  # Mbit/s
    mtu = _sysfs_int(os.path.join(base, "mtu"))
    return {
        "speed_bytes_per_second": speed * 125_000 if speed and speed > 0 else 0,
        "up": int(_sysfs_text(os.path.join(base, "operstate")) == "up"),
        "mtu_bytes": mtu if mtu and mtu > 0 else 0,
    }


def open_host_net(paths: HostPaths, name: str, collector: str) -> tuple[ProcFile, bool]:
    """``<proc>/1/net/<name>`` (the host's namespace) if readable, else ``<proc>/self/net/<name>``
    with one WARNING; the flag says whether it is PID 1's. Raises if neither is readable."""
    host = ProcFile(paths.proc_path("1", "net", name))
    try:
        host.read()
        return host, True
    except ProviderError as exc:
        host.close()
        own = ProcFile(paths.proc_path("self", "net", name))
        try:
            own.read()
        except ProviderError:
            own.close()
            raise exc from None
        event(
            "WARNING",
            "net_host_namespace_unavailable",
            f"{collector}: cannot read PID 1's network namespace; reporting this process's own "
            "instead (the host's only with --network host / hostNetwork)",
            collector=collector,
            path=host.path,
            reason=str(exc),
            fallback=own.path,
        )
        return own, False


class NetProvider:
    name = "net"

    def __init__(
        self,
        paths: HostPaths,
        *,
        interfaces_exclude: re.Pattern[str],
        clock: Clock = time.monotonic,
    ) -> None:
        self._paths = paths
        self._exclude = interfaces_exclude
        self._clock = clock
        self._file: ProcFile | None = None
        self._prev: Previous[tuple[int, ...]] = Previous(clock)
        self._links: dict[str, tuple[float, dict[str, FieldValue]]] = {}
        self.host_namespace = True

    def _read(self) -> dict[str, tuple[int, ...]]:
        if self._file is None:
            self._file, self.host_namespace = open_host_net(self._paths, "dev", self.name)
            sysfs = self._paths.sys_path("class", "net")
            if not os.path.isdir(sysfs):
                say_missing(
                    self.name,
                    sysfs,
                    "no such directory",
                    "speed, up and MTU are 0 (mount the host's /sys, SIC_HOST_SYS)",
                )
        stats = parse_net_dev(self._file.read(), self._file.path)
        return {i: s for i, s in stats.items() if not self._exclude.search(i)}

    def prime(self) -> None:
        self._prev.start(self._read())

    def _link(self, interface: str, now: float) -> dict[str, FieldValue]:
        """Speed, state and MTU, re-read at most every 10 s (they rarely change)."""
        cached = self._links.get(interface)
        if cached is None or now - cached[0] >= 10.0 or now < cached[0]:
            cached = (now, link_fields(self._paths, interface))
            self._links[interface] = cached
        return cached[1]

    def collect(self) -> list[Sample]:
        current = self._read()
        now = self._clock()
        elapsed, pairs = self._prev.advance(current)
        samples = []
        for interface, prev, cur in pairs:
            d = deltas(prev, cur)
            if d is None:
                continue  # new interface, counter wrap or reset: start again from this reading
            fields: dict[str, FieldValue] = dict(zip(_TOTAL_NAMES, cur, strict=True))
            for name, index in _RATE_COLUMNS:
                fields[name] = d[index] / elapsed
            fields.update(self._link(interface, now))
            samples.append(Sample({"interface": interface}, fields))
        for gone in set(self._links) - set(current):
            del self._links[gone]
        return samples

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _up_is_boolean(fields: Mapping[str, FieldValue]) -> Problem | None:
    return None if fields["up"] in (0, 1) else ("up", fields["up"], "boolean")


def _probe(paths: HostPaths, settings: NetSettings) -> str:
    file, host = open_host_net(paths, "dev", "net")
    try:
        interfaces = parse_net_dev(file.read(), file.path)
    finally:
        file.close()
    kept = [i for i in interfaces if not settings.interfaces_exclude.search(i)]
    where = (
        "PID 1's network namespace"
        if host
        else "FALLBACK: this process's own network namespace, PID 1's is not readable"
    )
    names = ", ".join(kept[:8])
    return f"{file.path} readable ({where}), {len(kept)} interfaces after filters ({names})"


COLLECTOR = Collector(
    measurement=MEASUREMENT,
    settings=NetSettings,
    factory=lambda paths, settings, clock: NetProvider(
        paths, interfaces_exclude=settings.interfaces_exclude, clock=clock
    ),
    probe=("proc net/dev", _probe),
    options=OPTIONS,
    rules=Rules(check=_up_is_boolean),
)
