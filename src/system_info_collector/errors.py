"""Errors typed by what the caller must do."""

from __future__ import annotations


class CollectorError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(CollectorError):
    """The configuration is invalid; ``problems`` lists every problem found (exit code 2)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration: " + "; ".join(problems))
        self.problems = problems


class ProviderError(CollectorError):
    """A provider could not read the host this tick; the agent logs, counts, retries next tick."""


class SinkError(CollectorError):
    """A sink could not write a batch."""


class TransientSinkError(SinkError):
    """Worth retrying as is: the destination is unreachable, full, or busy."""


class PermanentSinkError(SinkError):
    """Retrying the same batch will not help (bad data or bad configuration)."""
