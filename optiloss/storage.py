"""Where studies live: SQLite by default, any SQLAlchemy URL (PostgreSQL included)."""

from __future__ import annotations

import functools
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.engine
import sqlalchemy.event
import sqlalchemy.exc
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url

from optiloss.errors import OptilossError, UsageError

DEFAULT_STORAGE = "sqlite:///storage/optiloss.db"
REPORTS_DIR = "storage/reports"
"""Where reports (transfer, matrix, the experiment's page) go unless told otherwise."""
ARTIFACTS_DIR = "storage/artifacts"
"""Where the search writes the dashboard's artifacts (plots of Pareto-front losses) by default."""
STORAGE_ENVIRONMENT_VARIABLE = "OPTILOSS_STORAGE"
DEFAULT_OUTAGE_SECONDS = 120.0
"""How long the storage calls of a search wait for a database that went away before giving up."""
REAL_ERRORS = (
    "password authentication failed",
    "does not exist",
    "permission denied",
    "no password supplied",
)
"""Messages of database errors that no retry mends: they are reported at once."""


def resolve_storage_url(url: str | None = None) -> str:
    """The storage URL: ``url`` if given, else ``$OPTILOSS_STORAGE``, else the default SQLite file."""
    return url or os.environ.get(STORAGE_ENVIRONMENT_VARIABLE) or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for output, logs and errors."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL: say nothing that could contain a secret
        return "<storage URL>"


def mask_password(text: str, url: str) -> str:
    """``text`` with the password of ``url`` masked where it stands as a password: the URL itself,
    any URL's ``scheme://user:PASSWORD@`` and ``password=PASSWORD`` (a libpq connection string). The same
    characters elsewhere in the text (a password ``p`` in "import") are left alone."""
    try:
        password = make_url(url).password
    except Exception:  # not a URL: nothing to find in the text
        return text
    if not password:
        return text
    secret = re.escape(str(password))
    text = text.replace(url, mask_url(url))
    text = re.sub(r"://([^:/@\s]*):[^@\s]*@", r"://\1:***@", text)  # any URL's password field
    return re.sub(rf"(password\s*=\s*['\"]?){secret}(?=['\"]?(\s|$))", r"\1***", text)


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


def connection_lost(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a lost or refused database connection that a retry may
    mend (a server restarting, a failover), not a real error such as a wrong password."""
    seen: BaseException | None = error
    while seen is not None:
        lost = isinstance(
            seen,
            sqlalchemy.exc.OperationalError
            | sqlalchemy.exc.InterfaceError
            | sqlalchemy.exc.DisconnectionError,
        ) or type(seen).__name__ in {
            "OperationalError",
            "AdminShutdown",
            "ConnectionFailure",
            "InterfaceError",
        }
        if lost:
            return not any(mark in str(seen).lower() for mark in REAL_ERRORS)
        seen = seen.__cause__ or seen.__context__
    return False


class DatabaseOutageError(OptilossError):
    """The database stayed unreachable for longer than the outage window."""


class OutageTolerantStorage(optuna.storages.RDBStorage):
    """An :class:`~optuna.storages.RDBStorage` whose every storage call (those optiloss makes and those
    it makes Optuna make: ask, tell, attributes, heartbeats) is retried with backoff while the
    connection is lost, for up to ``outage_s`` seconds of one outage.

    Connections are checked before use (``pool_pre_ping``), so a pooled connection the server dropped
    is replaced instead of failing a call. One line goes to stderr when the database goes away and
    one when it is back; a finished trial's values are stored when it returns, never thrown away.
    Past the window, every call raises :class:`DatabaseOutageError` at once (one line for the user,
    exit 1). A ``tell`` whose first attempt was committed before the connection broke reads the
    trial as finished on its retry, which counts as done.
    """

    def __init__(self, url: str, *args: Any, outage_s: float = DEFAULT_OUTAGE_SECONDS, **kwargs: Any) -> None:
        self._outage_s = outage_s
        self._masked = mask_url(url)
        self._down_since: float | None = None
        self._gave_up = False
        self._lock = threading.Lock()
        super().__init__(url, *args, **kwargs)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    def _call(self, method: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> Any:
        delay, retried = 0.25, False
        while True:
            if self._gave_up:
                if name == "record_heartbeat":
                    return None  # another thread gave up first; the heartbeat thread stops quietly
                raise DatabaseOutageError(self._outage_message())
            try:
                result = method(*args, **kwargs)
            except UpdateFinishedTrialError:
                if retried and name == "set_trial_state_values":
                    return True  # the first attempt was committed before the connection broke
                raise
            except Exception as error:
                if not connection_lost(error):
                    raise
                if self._waited_too_long():
                    if name == "record_heartbeat":
                        return None  # the heartbeat thread stops quietly; the trial's own call says why
                    raise DatabaseOutageError(self._outage_message()) from None
                time.sleep(delay)
                delay, retried = min(2 * delay, 5.0), True
                continue
            self._back()
            return result

    def _waited_too_long(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                print(
                    f"optiloss: database at {self._masked} unreachable; "
                    f"retrying for up to {self._outage_s:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
            if now - self._down_since > self._outage_s:
                self._gave_up = True
            return self._gave_up

    def _back(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is not None:
                print(
                    f"optiloss: database at {self._masked} is back after "
                    f"{time.monotonic() - self._down_since:.0f} s; going on",
                    file=sys.stderr,
                    flush=True,
                )
                self._down_since = None

    def _outage_message(self) -> str:
        return (
            f"database at {self._masked} unreachable for more than {self._outage_s:.0f} s; "
            "run the same command to continue once it is back"
        )


def _retried(name: str) -> Callable[..., Any]:
    original = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(original)
    def call(self: OutageTolerantStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(functools.partial(original, self), name, *args, **kwargs)

    return call


RETRIED_CALLS = (
    *(
        name
        for name in dir(optuna.storages.BaseStorage)
        if not name.startswith("_")
        and name != "remove_session"
        and callable(getattr(optuna.storages.BaseStorage, name))
    ),
    "record_heartbeat",
    # what Optuna's cache in front of an RDB storage calls directly
    "_get_stale_trial_ids",
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_trials",
    "_set_trial_param",
)
for _name in RETRIED_CALLS:
    setattr(OutageTolerantStorage, _name, _retried(_name))


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


def storage_from(storage: str | optuna.storages.BaseStorage | None) -> optuna.storages.BaseStorage:
    """``storage`` itself when it is open already (an experiment run's, opened once), else the existing
    storage at that URL (:func:`open_storage` without ``create``)."""
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    return open_storage(storage, create=False)


def open_storage(
    url: str | None = None,
    *,
    create: bool = True,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
    outage_s: float = DEFAULT_OUTAGE_SECONDS,
) -> optuna.storages.RDBStorage:
    """Open (and with ``create``, initialise) the storage at ``url``.

    An SQLite file opened with ``create`` uses write-ahead logging with ``synchronous = NORMAL``
    (:func:`write_ahead_log`). With ``heartbeat_interval``, running trials send heartbeats; one silent for
    ``grace_period`` seconds is failed and re-enqueued with the same parameters
    (at most ``max_retry`` times). A database server's storage, once open, rides out a lost
    connection for up to ``outage_s`` seconds (:class:`OutageTolerantStorage`); opening it does not
    wait, and an SQLite file has no server to wait for.

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
    engine_kwargs["pool_pre_ping"] = True  # a connection the server dropped is replaced, not used
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
        if path is None:
            return OutageTolerantStorage(url, engine_kwargs=engine_kwargs, outage_s=outage_s, **heartbeat)
        # a file: no server to come back, and its errors (read-only, disk full) are real
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, skip_table_creation=reading, **heartbeat
        )
        if create:
            write_ahead_log(storage.engine)
        return storage
    except sqlalchemy.exc.NoSuchModuleError:
        raise UsageError(
            f"unknown database kind in {mask_url(url)}; use sqlite:///PATH or "
            "postgresql://USER:PASSWORD@HOST/DB"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ModuleNotFoundError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        reason = mask_password(reason, url)
        if "password authentication failed" in reason or "no password supplied" in reason:
            raise UsageError(
                f"the database refused the login for {mask_url(url)}: check the user and password in the URL"
            ) from None
        advice = (
            "install the Python driver that URL names"
            if isinstance(error, ImportError)
            else "check that the database server is running and the URL is right"
        )
        raise OptilossError(f"cannot open storage {mask_url(url)}: {reason}; {advice}") from None
