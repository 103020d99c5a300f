"""Where studies live: SQLite by default, any SQLAlchemy URL (PostgreSQL included)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import optuna
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


def open_storage(
    url: str | None = None,
    *,
    create: bool = True,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
) -> optuna.storages.RDBStorage:
    """Open (and with ``create``, initialise) the storage at ``url``.

    With ``heartbeat_interval``, running trials send heartbeats; one silent for
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
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, skip_table_creation=reading, **heartbeat
        )
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
