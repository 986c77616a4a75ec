"""The PostgreSQL sink, one module per concern (as Telegraf's ``plugins/outputs/postgresql``):

* :mod:`.errors` -- :class:`ErrorKind` by SQLSTATE class (:func:`classify`);
* :mod:`.connection` -- PgBouncer-safe connections, the :class:`Watchdog`, :func:`run_script`
  (one transaction = one simple query);
* :mod:`.ddl` -- schema, tables, version row (:func:`ensure_schema`);
* :mod:`.encoding` -- ``SET LOCAL``, the one ``INSERT … SELECT … ON CONFLICT`` (live batches
  from ``unnest`` arrays, replayed chunks from a staging table filled by ``COPY``);
* :mod:`.deadletter` -- the dead-letter file;
* :mod:`.sink` -- :class:`PostgresSink`, what the worker drives.
"""

from system_info_collector.sinks.postgres.connection import (
    WATCHDOG_GRACE,
    Watchdog,
    abort_socket,
    connect,
    dsn_secrets,
    read_password,
    run_script,
)
from system_info_collector.sinks.postgres.ddl import ensure_schema
from system_info_collector.sinks.postgres.encoding import (
    UnnestEncoder,
    copy_script,
    insert_script,
    insert_select_sql,
    local_settings,
)
from system_info_collector.sinks.postgres.errors import (
    CONFIG,
    DATA,
    TRANSIENT,
    ErrorKind,
    classify,
    error_text,
)
from system_info_collector.sinks.postgres.sink import PostgresSink

__all__ = [
    "CONFIG",
    "DATA",
    "TRANSIENT",
    "WATCHDOG_GRACE",
    "ErrorKind",
    "PostgresSink",
    "UnnestEncoder",
    "Watchdog",
    "abort_socket",
    "classify",
    "connect",
    "copy_script",
    "dsn_secrets",
    "ensure_schema",
    "error_text",
    "insert_script",
    "insert_select_sql",
    "local_settings",
    "read_password",
    "run_script",
]
