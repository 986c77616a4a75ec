"""The real /proc of this machine against free(1) and df(1), and the real run loop."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import EXE, FIXTURES, clean_env, fields_of, run_cli


def once(**env: str) -> list[dict]:  # type: ignore[type-arg]
    result = run_cli("once", env=clean_env(**env))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_memory_matches_free() -> None:
    records = once(SIC_COLLECTORS="memory")
    free = subprocess.run(["free", "-b"], capture_output=True, text=True, check=True).stdout
    mem = dict(
        zip(
            ["total", "used", "free", "shared", "buff/cache", "available"],
            map(int, free.splitlines()[1].split()[1:]),
            strict=True,
        )
    )
    swap = list(map(int, free.splitlines()[2].split()[1:]))
    f = fields_of(records[0])
    tolerance = 64 * 1024 * 1024  # memory moves between the two readings
    assert f["total_bytes"] == mem["total"]
    assert abs(f["used_bytes"] - mem["used"]) < tolerance
    assert abs(f["available_bytes"] - mem["available"]) < tolerance
    assert abs(f["free_bytes"] - mem["free"]) < tolerance
    assert abs(f["buffers_bytes"] + f["cached_bytes"] - mem["buff/cache"]) < tolerance
    assert f["swap_total_bytes"] == swap[0]


def test_filesystems_match_df() -> None:
    records = once(SIC_COLLECTORS="disk")
    by_mount = {r["mountpoint"]: fields_of(r) for r in records}
    assert "/" in by_mount
    df = subprocess.run(
        ["df", "-B1", "--output=target,size,used,avail", "/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    target, size, used, avail = df.splitlines()[1].split()
    f = by_mount[target]
    assert f["total_bytes"] == int(size)
    tolerance = 256 * 1024 * 1024
    assert abs(f["used_bytes"] - int(used)) < tolerance
    assert abs(f["available_bytes"] - int(avail)) < tolerance


def test_cpu_count_matches_the_machine() -> None:
    records = once(SIC_COLLECTORS="cpu")
    cpus = {r["cpu"] for r in records}
    assert cpus == {"cpu-total", *(f"cpu{i}" for i in range(os.cpu_count() or 1))}
    for r in records:
        states = sum(
            v
            for k, v in fields_of(r).items()
            if k.endswith("_percent")
            and k not in ("usage_percent", "guest_percent", "guest_nice_percent")
        )
        assert abs(states - 100) < 0.5


def test_run_ticks_on_schedule_and_stops_cleanly_on_sigterm() -> None:
    env = clean_env(SIC_SINKS="stdout", SIC_INTERVAL="100ms", SIC_COLLECTORS="memory,cpu")
    proc = subprocess.Popen(
        [EXE, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        stamps: list[str] = []
        for line in proc.stdout:
            record = json.loads(line)
            if record["measurement"] == "memory":
                stamps.append(record["ts"])
            if len(stamps) == 15:
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    times = [datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps]
    steps = {round(b - a, 3) for a, b in itertools.pairwise(times)}
    assert steps == {0.1}, steps  # every slot, aligned, none skipped
    assert all(round(t * 1000) % 100 == 0 for t in times)
    events = [json.loads(line)["event"] for line in err.splitlines()]
    assert "shutdown_requested" in events and events[-1] == "collector_stopped"


@pytest.mark.integration
def test_in_a_container_namespace_the_host_mounts_are_reported(tmp_path: object) -> None:
    """As root: a new mount+PID namespace sees the host only through /host/proc and /host/root."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to create mount and PID namespaces")
    host_mounts = {r["mountpoint"]: r["total_bytes"] for r in once(SIC_COLLECTORS="disk")}
    script = f"""
set -e
mkdir -p /tmp/sic-ns-host/proc /tmp/sic-ns-host/root
mount --bind /proc /tmp/sic-ns-host/proc
mount --rbind / /tmp/sic-ns-host/root
mount -t proc proc /proc
# The namespace's own view differs from the host's: a tmpfs only it has.
mkdir -p /tmp/sic-ns-only && mount -t tmpfs -o size=1m sic-ns-only /tmp/sic-ns-only
export SIC_HOST_PROC=/tmp/sic-ns-host/proc SIC_HOST_ROOT=/tmp/sic-ns-host/root
export SIC_COLLECTORS=disk,memory,cpu SIC_HTTP_LISTEN= SIC_DISK_FSTYPES_EXCLUDE='^(proc|sysfs)$'
echo "pid=$$"
exec {EXE} once
"""
    result = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "pid=1"  # really inside a new PID namespace
    records = [json.loads(line) for line in lines[1:]]
    mounts = {r["mountpoint"]: r["total_bytes"] for r in records if r["measurement"] == "disk"}
    assert "/tmp/sic-ns-only" not in mounts  # the namespace's own mount is not the host's
    assert not any(m.startswith("/tmp/sic-ns-host") for m in mounts)
    assert mounts["/"] == host_mounts["/"]
    cpus = {r["cpu"] for r in records if r["measurement"] == "cpu"}
    assert len(cpus) == (os.cpu_count() or 1) + 1


@pytest.mark.integration
def test_a_hung_mount_neither_freezes_the_ticks_nor_blocks_the_exit(tmp_path: Path) -> None:
    """A FUSE mount whose server is stopped hangs statvfs like a dead NFS server (as root)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root, unshare(1) and /dev/fuse to serve a mount and stop its server")
    mountpoint = str(tmp_path / "hung")
    result = subprocess.run(
        [
            "unshare",
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            sys.executable,
            str(FIXTURES / "hungfs.py"),
            mountpoint,
            EXE,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    run = summary["run"]
    # SIGTERM ends the run promptly although a statvfs call is still blocked in the kernel.
    assert run["returncode"] == 0 and run["exit_seconds"] is not None, run["stderr"]
    assert run["exit_seconds"] < 3.0, run["stderr"]
    events = [json.loads(line) for line in run["stderr"].splitlines()]
    hung = [e for e in events if e["event"] == "disk_mount_failed"]
    assert [e["mountpoint"] for e in hung] == [mountpoint], run["stderr"]  # logged once
    assert "did not return" in hung[0]["reason"]
    assert not [e for e in events if e["event"] in ("tick_overrun", "collector_failed")]
    ticks: dict[str, set[str]] = {}
    for r in run["records"]:
        ticks.setdefault(r["ts"], set()).add(r.get("mountpoint", r["measurement"]))
    stamps = sorted(ticks)
    times = [datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps]
    assert {round(b - a, 3) for a, b in itertools.pairwise(times)} == {0.1}  # no slot lost
    assert all(seen == {"memory", "/"} for seen in ticks.values()), ticks  # the rest measured
    once = summary["once"]
    assert once["returncode"] == 0 and once["seconds"] < 5.0, once["stderr"]
    assert {r.get("mountpoint") for r in once["records"]} >= {"/"}
    assert mountpoint not in {r.get("mountpoint") for r in once["records"]}
