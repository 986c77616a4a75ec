"""Progress of long commands: plain lines off a terminal, a tqdm bar on a real one (a pty)."""

from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import termios
import time

import pytest

from system_info_collector import progress
from system_info_collector.progress import Progress


def test_off_a_terminal_it_prints_plain_lines_with_rate_and_eta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)
    out = io.StringIO()
    bar = Progress(out, "replay", 4 << 20, "bytes")
    bar.update(1 << 20, rows=1000)
    bar.update(4 << 20, rows=4000)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("replay: 25 % (1.0 MiB of 4.0 MiB), 1,000 rows (")
    assert lines[1].startswith("replay: 100 % (4.0 MiB of 4.0 MiB), 4,000 rows (")
    assert "/s, ETA " in lines[0] and "\r" not in out.getvalue()


def _read_pty(fd: int, until: str, timeout: float = 5.0) -> str:
    """Everything the pty has delivered, until ``until`` arrived (a pty hands over chunks)."""
    got = b""
    deadline = time.monotonic() + timeout
    while until.encode() not in got and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            got += os.read(fd, 65536)
    return got.decode()


def test_on_a_terminal_it_draws_a_bar() -> None:
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    with os.fdopen(follower, "w") as tty:
        assert tty.isatty()
        bar = Progress(tty, "migrate: cpu", 200, "rows")
        bar.update(100)
        bar.update(200)
        bar.close()
        tty.flush()
        drawn = _read_pty(leader, until="200/200")
    os.close(leader)
    assert "migrate: cpu" in drawn and "100%" in drawn and "200/200" in drawn
    assert "\r" in drawn  # redrawn in place, not one line per update
