"""Hand freed heap back to the operating system.

glibc keeps memory freed by Python in its arenas, so the RSS of a process that once held a large
backlog stays high after the backlog drained; ``malloc_trim(0)`` returns it. Called at start-up
(after imports) and by a buffer whose large backlog was written. A no-op where libc is not glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc


def release_free_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)
