"""A synthetic big host: a procfs tree with N CPUs, D disks and M mounts, and moving counters.

    .venv/bin/python bench/synthetic_host.py DIR --cpus 256 --disks 64 --mounts 64

writes ``DIR/proc`` (``stat``, ``meminfo``, ``vmstat``, ``diskstats``, ``filesystems``,
``1/mountinfo`` for the collector, ``self/mounts`` for psutil, ``sys/kernel/hostname``, and for
the rest of the default collectors ``loadavg``, ``uptime``, ``1/net/dev`` with I interfaces,
``sys/fs/file-nr`` and ``pressure/{cpu,memory,io}``) and
``DIR/root`` (``etc/hostname`` and one directory per mount point, so ``statvfs`` of
``<root>/<mountpoint>`` answers), then rewrites the counter files every 50 ms until SIGTERM.

The files are rewritten IN PLACE (one ``pwrite`` at offset 0 of the same open file, never a new
file renamed over the old one), because the collector keeps procfs files open and re-reads them
from the start. Every counter starts at ten digits and grows by a few units per step, so a file
keeps the same length and a reader never sees a shorter file with a stale tail.

Point the collector at it with ``SIC_HOST_PROC=DIR/proc SIC_HOST_ROOT=DIR/root`` and psutil with
``psutil.PROCFS_PATH = "DIR/proc"``. Used by bench/scale.py; not part of the product.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

STEP_SECONDS = 0.05
JIFFIES_PER_STEP = 5  # USER_HZ 100: 50 ms of one CPU
BASE = 1_000_000_000  # ten digits; a run adds far less than 9e9
# (user, system, iowait, softirq, guest) jiffies of one step; idle gets the rest of the 5
_CPU_STEPS = ((0, 1, 0, 1, 0), (2, 0, 0, 0, 1), (3, 1, 0, 0, 1), (0, 0, 0, 0, 0), (2, 1, 1, 0, 0))


class SyntheticHost:
    def __init__(
        self,
        base: str | os.PathLike[str],
        cpus: int,
        disks: int,
        mounts: int,
        interfaces: int = 4,
    ) -> None:
        self.base = Path(base)
        self.proc = self.base / "proc"
        self.root = self.base / "root"
        self.cpus, self.disks, self.mounts = cpus, disks, mounts
        self.step = 0
        # per CPU: user nice system idle iowait irq softirq steal guest guest_nice
        self._cpu = [[BASE + 7919 * i + 31 * c for c in range(10)] for i in range(cpus)]
        # per disk: the 17 counters after the name (kernel 5.5+; in_flight kept at 0)
        self._disk = [[BASE + 104729 * d + 17 * c for c in range(17)] for d in range(disks)]
        # per interface: the 16 counters of a /proc/net/dev line (rx then tx)
        self._net = [[BASE + 1299709 * n + 13 * c for c in range(16)] for n in range(interfaces)]
        # vmstat: pgfault pgmajfault pgpgin pgpgout pswpin pswpout oom_kill; PSI totals (us)
        self._vm = [BASE + 11 * c for c in range(7)]
        self._psi = [BASE + 7 * c for c in range(5)]  # cpu some, memory some/full, io some/full
        self._fds: dict[str, int] = {}
        self._sizes: dict[str, int] = {}

    # -- the tree -----------------------------------------------------------------------
    def mountpoints(self) -> list[str]:
        return ["/"] + [f"/data/nvme{i}" for i in range(1, self.mounts)]

    def create(self) -> None:
        for sub in ("1/net", "self", "sys/kernel", "sys/fs", "pressure"):
            (self.proc / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "etc").mkdir(parents=True, exist_ok=True)
        name = f"synthetic-{self.cpus}cpu"
        (self.root / "etc" / "hostname").write_text(name + "\n")
        (self.proc / "sys" / "kernel" / "hostname").write_text(name + "\n")
        for mp in self.mountpoints()[1:]:
            (self.root / mp.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (self.proc / "filesystems").write_text("nodev\tsysfs\nnodev\tproc\n\text4\n\txfs\n")
        info, mounts = [], []
        for i, mp in enumerate(self.mountpoints()):
            dev = f"/dev/nvme{i}n1"
            info.append(f"{20 + i} 1 259:{i} / {mp} rw,relatime shared:{i + 1} - ext4 {dev} rw")
            mounts.append(f"{dev} {mp} ext4 rw,relatime 0 0")
        (self.proc / "1" / "mountinfo").write_text("\n".join(info) + "\n")
        (self.proc / "self" / "mounts").write_text("\n".join(mounts) + "\n")
        self.write()

    # -- moving counters ----------------------------------------------------------------
    def advance(self) -> None:
        """One 50 ms step: every CPU spends 5 jiffies, every disk does some I/O."""
        self.step += 1
        s = self.step
        for i, c in enumerate(self._cpu):
            k = (s + i) % 5  # CPUs out of phase: every CPU line changes differently
            user, system, iowait, softirq, guest = _CPU_STEPS[k]
            c[0] += user  # guest time is counted in user time too
            c[2] += system
            c[3] += JIFFIES_PER_STEP - user - system - iowait - softirq
            c[4] += iowait
            c[6] += softirq
            c[8] += guest
        for d, n in enumerate(self._disk):
            r, w = 3 + (s + d) % 7, 5 + (s * 3 + d) % 11
            n[0] += r  # reads
            n[2] += 8 * r  # sectors read
            n[3] += r  # ms reading
            n[4] += w
            n[6] += 16 * w
            n[7] += 2 * w
            n[9] += 30  # io ms: 60 % busy
            n[10] += 3 * w
        for i, n in enumerate(self._net):
            rx, tx = 1500 * (3 + (s + i) % 5), 1500 * (2 + (s * 7 + i) % 3)
            n[0] += rx  # bytes
            n[1] += rx // 1500  # packets
            n[8] += tx
            n[9] += tx // 1500
        vm = self._vm
        vm[0] += 100 + s % 7  # page faults, a few of them major
        vm[1] += s % 2
        vm[2] += 40
        vm[3] += 80
        for k in range(len(self._psi)):
            self._psi[k] += 1000 * (1 + k % 2)  # stall microseconds

    def _stat(self) -> str:
        total = [sum(col) for col in zip(*self._cpu, strict=True)] if self._cpu else [0] * 10
        lines = ["cpu  " + " ".join(map(str, total))]
        lines += [f"cpu{i} " + " ".join(map(str, c)) for i, c in enumerate(self._cpu)]
        t = 1_700_000_000 + self.step // 20
        lines += [
            "intr 1000000000 0",
            "ctxt 1000000000",
            f"btime {1_700_000_000}",
            f"processes {BASE + self.step}",
            "procs_running 3",
            "procs_blocked 0",
            f"softirq {BASE + t} 0",
        ]
        return "\n".join(lines) + "\n"

    def _meminfo(self) -> str:
        total_kb = 1_000_000_000 * self.cpus // 256 + 4_000_000  # ~4 GB/CPU, constant width
        wobble = (self.step * 4096) % 1_000_000  # moves every step, six digits at most
        free = total_kb // 4 + wobble
        rows = [
            ("MemTotal", total_kb),
            ("MemFree", free),
            ("MemAvailable", total_kb // 2 + wobble),
            ("Buffers", total_kb // 50),
            ("Cached", total_kb // 5),
            ("SwapCached", 0),
            ("Active", total_kb // 3),
            ("Inactive", total_kb // 6),
            ("SwapTotal", 8_388_604),
            ("SwapFree", 8_000_000),
            ("Dirty", 1000 + self.step % 9000),
            ("Shmem", total_kb // 100),
            ("SReclaimable", total_kb // 40),
            ("SUnreclaim", total_kb // 80),
        ]
        width = len(str(total_kb))
        return "".join(f"{k + ':':<16}{v:>{width}} kB\n" for k, v in rows)

    def _diskstats(self) -> str:
        return "".join(
            f" 259 {d} nvme{d}n1 "
            + " ".join(map(str, n[:8]))
            + " 0 "
            + " ".join(map(str, n[9:]))
            + "\n"
            for d, n in enumerate(self._disk)
        )

    def _net_dev(self) -> str:
        head = (
            "Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets "
            "errs drop fifo colls carrier compressed\n"
        )
        return head + "".join(
            f"{f'eth{i}':>6}: " + " ".join(map(str, n)) + "\n" for i, n in enumerate(self._net)
        )

    def _vmstat(self) -> str:
        names = ("pgfault", "pgmajfault", "pgpgin", "pgpgout", "pswpin", "pswpout", "oom_kill")
        return "nr_free_pages 52428800\n" + "".join(
            f"{k} {v}\n" for k, v in zip(names, self._vm, strict=True)
        )

    def _pressure(self, resource: str) -> str:
        some, full = {"cpu": (0, None), "memory": (1, 2), "io": (3, 4)}[resource]
        lines = [f"some avg10=0.10 avg60=0.20 avg300=0.30 total={self._psi[some]}"]
        total = self._psi[full] if full is not None else 0
        lines.append(f"full avg10=0.00 avg60=0.00 avg300=0.00 total={total}")
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        up = 1_000_000 + self.step * STEP_SECONDS
        for name, text in (
            ("stat", self._stat()),
            ("meminfo", self._meminfo()),
            ("diskstats", self._diskstats()),
            ("vmstat", self._vmstat()),
            ("1/net/dev", self._net_dev()),
            ("loadavg", f"{1.5 + self.step % 9 / 100:.2f} 1.20 1.10 3/{BASE} 4242\n"),
            ("uptime", f"{up:.2f} {up * self.cpus:.2f}\n"),
            ("sys/fs/file-nr", f"{BASE + self.step % 1000}\t0\t9223372036854775807\n"),
            ("pressure/cpu", self._pressure("cpu")),
            ("pressure/memory", self._pressure("memory")),
            ("pressure/io", self._pressure("io")),
        ):
            self._write_in_place(name, text.encode())

    def _write_in_place(self, name: str, data: bytes) -> None:
        fd = self._fds.get(name)
        if fd is None:
            fd = self._fds[name] = os.open(self.proc / name, os.O_RDWR | os.O_CREAT, 0o644)
        os.pwrite(fd, data, 0)  # one call: readers see old or new bytes, same length
        if self._sizes.get(name) != len(data):
            os.ftruncate(fd, len(data))
            self._sizes[name] = len(data)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--cpus", type=int, default=256)
    ap.add_argument("--disks", type=int, default=64)
    ap.add_argument("--mounts", type=int, default=64)
    args = ap.parse_args()
    host = SyntheticHost(args.dir, args.cpus, args.disks, args.mounts)
    host.create()
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print("ready", flush=True)
    next_t = time.monotonic()
    while not stop:
        next_t += STEP_SECONDS
        time.sleep(max(0.0, next_t - time.monotonic()))
        host.advance()
        host.write()
    host.close()


if __name__ == "__main__":
    main()
