"""Small helpers shared by providers: read a host file, turning OS errors into ProviderError."""

from __future__ import annotations

from system_info_collector.errors import ProviderError


def read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError as exc:
        raise ProviderError(f"cannot read {path}: {exc.strerror or exc}") from exc
