"""Where studies live: SQLite by default, any SQLAlchemy URL (PostgreSQL included)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.engine
import sqlalchemy.event
import sqlalchemy.exc
from optuna.storages import RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url

from optiloss.errors import OptilossError, UsageError

DEFAULT_STORAGE = "sqlite:///storage/optiloss.db"
STORAGE_ENVIRONMENT_VARIABLE = "OPTILOSS_STORAGE"


def resolve_storage_url(url: str | None = None) -> str:
    """The storage URL: ``url`` if given, else ``$OPTILOSS_STORAGE``, else the default SQLite file."""
    return url or os.environ.get(STORAGE_ENVIRONMENT_VARIABLE) or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for output, logs and errors."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL: say nothing that could contain a secret
        return "<storage URL>"


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if parsed.database.startswith("file:"):  # an SQLite URI (sqlite:///file:x.db?mode=ro&uri=true)
        return Path(parsed.database[len("file:") :].split("?", 1)[0])
    return Path(parsed.database)


READ_ONLY_MARKS = ("readonly database", "read-only file system", "read only database")


def read_only_storage(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a database refusing to be written to."""
    seen: BaseException | None = error
    while seen is not None:
        if any(mark in str(seen).lower() for mark in READ_ONLY_MARKS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _fast_durable_pragmas(connection: Any, _record: Any) -> None:
    connection.isolation_level = None  # the driver begins no transaction of its own: _begin_immediate does
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def write_ahead_log(engine: sqlalchemy.engine.Engine) -> None:
    """Every connection of ``engine`` (an SQLite file opened for writing) in write-ahead-log mode with
    ``synchronous = NORMAL``: a commit appends to the log without waiting for the disk, so a trial's
    writes (its parameters, about 30 user attrs, its values) cost a fraction of a millisecond each
    instead of a disk flush each.

    Durable against a killed process (kill -9, a crash, Ctrl-C): a committed transaction is in the
    log, and the next opening replays it, which is what resuming a search needs. A power cut or an
    operating-system crash may lose the last commits (never corrupt the file). The mode stays with
    the file: readers (optuna-dashboard, ``optiloss pareto``) need to write its ``-wal`` and ``-shm``
    files beside it, so share a copy, not the live file, read-only.

    Each transaction begins with ``BEGIN IMMEDIATE``, taking the write lock before it reads: Optuna
    reads a trial's state and then writes it (``SELECT … FOR UPDATE``, which SQLite ignores), and
    without the lock two workers could both take the same waiting trial, both train it, and the
    second fail with "Cannot tell a COMPLETE trial" (seen with ``--workers 2``). Other writers wait
    for the lock (the busy timeout); readers never do.
    """
    sqlalchemy.event.listen(engine, "connect", _fast_durable_pragmas)
    sqlalchemy.event.listen(engine, "begin", _begin_immediate)
    engine.dispose()  # the connections made while creating the tables reopen with the pragmas


def open_storage(
    url: str | None = None,
    *,
    create: bool = True,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
) -> optuna.storages.RDBStorage:
    """Open (and with ``create``, initialise) the storage at ``url``.

    An SQLite file opened with ``create`` uses write-ahead logging with ``synchronous = NORMAL``
    (:func:`write_ahead_log`). With ``heartbeat_interval``, running trials send heartbeats; one silent for
    ``grace_period`` seconds is failed and re-enqueued with the same parameters
    (at most ``max_retry`` times).

    Raises :class:`UsageError` (exit 2) for a malformed URL, an unknown database
    kind, a rejected password or an SQLite folder that cannot be made,
    :class:`OptilossError` (exit 1) when the database cannot be reached or,
    without ``create``, an SQLite file does not exist.
    """
    url = resolve_storage_url(url)
    try:
        path = sqlite_path(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise UsageError(
            f"not a database URL: {mask_url(url)} "
            "(expected e.g. sqlite:///storage/optiloss.db or "
            "postgresql://user@host/db)"
        ) from None
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        if not path.exists():
            if not create:
                raise OptilossError(
                    f"no study database at {path}: run `optiloss search` first or pass --storage"
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UsageError(
                    f"cannot create the folder {path.parent} for the SQLite file "
                    f"({error.strerror}); choose another --storage"
                ) from None
        # a dashboard or another worker may hold the lock for a while
        engine_kwargs = {"connect_args": {"timeout": 60}}
    heartbeat: dict[str, Any] = {}
    if heartbeat_interval:
        warnings.filterwarnings(
            "ignore",
            message=".*RetryHeartbeatStaleTrialCallback.*",
            category=optuna.exceptions.ExperimentalWarning,
        )
        warnings.filterwarnings(
            "ignore", message=".*heartbeat_interval.*", category=optuna.exceptions.ExperimentalWarning
        )
        heartbeat = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
        }
    try:
        # reading an existing SQLite file creates no table, so a read-only file opens for reading
        reading = not create and path is not None
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, skip_table_creation=reading, **heartbeat
        )
        if path is not None and create:
            write_ahead_log(storage.engine)
        return storage
    except sqlalchemy.exc.NoSuchModuleError:
        raise UsageError(
            f"unknown database kind in {mask_url(url)}; use sqlite:///PATH or "
            "postgresql://USER:PASSWORD@HOST/DB"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ModuleNotFoundError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        password = make_url(url).password
        if password:
            reason = reason.replace(str(password), "***")
        if "password authentication failed" in reason or "no password supplied" in reason:
            raise UsageError(
                f"the database refused the login for {mask_url(url)}: check the user and password in the URL"
            ) from None
        raise OptilossError(
            f"cannot open storage {mask_url(url)}: {reason}; "
            "check that the database server is running and the URL is right"
        ) from None
