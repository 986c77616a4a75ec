"""Progress of long commands (``replay``, ``db migrate``): a tqdm bar on a terminal, a plain
line every few seconds otherwise (logs, pipes, CI), the done/total, rate and ETA either way."""

from __future__ import annotations

import time
from typing import Any, TextIO

PLAIN_EVERY = 2.0  # seconds between plain lines


class Progress:
    """``update(done)`` of ``total`` units (``bytes`` or ``rows``); ``close()`` at the end."""

    def __init__(self, stream: TextIO, label: str, total: int, unit: str) -> None:
        self.stream, self.label, self.total, self.unit = stream, label, total, unit
        self.done = 0
        self.rows = 0
        self._started = self._last = time.monotonic()
        self._bar: Any = None
        if stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=label,
                unit="B" if unit == "bytes" else " rows",
                unit_scale=True,
                unit_divisor=1024 if unit == "bytes" else 1000,
                file=stream,
                dynamic_ncols=True,
            )

    def update(self, done: int, rows: int | None = None) -> None:
        self.done = min(done, self.total) if self.total else done
        if rows is not None:
            self.rows = rows
        if self._bar is not None:
            self._bar.update(self.done - self._bar.n)
            if rows is not None:
                self._bar.set_postfix(rows=f"{rows:,}", refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= PLAIN_EVERY:
            self._last = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        took = max((now or time.monotonic()) - self._started, 1e-9)
        rate = self.done / took
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        rows = f", {self.rows:,} rows ({self.rows / took:,.0f} rows/s)" if self.rows else ""
        done, total = _amount(self.done, self.unit), _amount(self.total, self.unit)
        return (
            f"{self.label}: {pct:.0f} % ({done} of {total}){rows}, "
            f"{_amount(rate, self.unit)}/s, ETA {eta:.0f}s"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _amount(value: float, unit: str) -> str:
    if unit != "bytes":
        return f"{value:,.0f} {unit}"
    for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {name}"
    return f"{value:.0f} B"
