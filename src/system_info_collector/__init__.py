"""system-info-collector: a small, dependable host-metrics agent."""

from system_info_collector.model import Record

__version__ = "0.1.0"

__all__ = ["Record", "__version__"]
