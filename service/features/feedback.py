"""The desk's verdicts on scored messages, stored durably for retraining (POST /v1/feedback).

SQLAlchemy Core over SQLite by default (WAL journal, synchronous=FULL: a commit is fsynced before
the call returns, so an acknowledged verdict survives a crash) or any URL SQLAlchemy can open, such
as PostgreSQL for larger deployments. One row per (message id, label): posting the same verdict
again changes nothing, and a corrected label is a new row (export takes the latest per message).

Calls block; the service runs them on its own small thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    make_url,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.errors import FeedbackUnavailable

logger = logging.getLogger("saring")

metadata = MetaData()
SCHEMA_LOCK = 0x5A41_4E47  # PostgreSQL advisory lock held while the schema is created

feedback_table = Table(
    "feedback",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # insertion order: "latest" without clocks
    Column("message_id", String(256), nullable=False),
    Column("label", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("note", Text, nullable=True),
    Column("moderator_id", String(256), nullable=True),
    Column("model_name", String(256), nullable=True),
    Column("model_version", String(256), nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("message_id", "label", name="uq_feedback_message_label"),
)


@dataclass(frozen=True)
class FeedbackRow:
    message_id: str
    label: str
    text: str
    note: str | None
    moderator_id: str | None
    model_name: str | None
    model_version: str | None
    received_at: datetime
    seq: int


def database_url(url: str | None, path: str | Path) -> str:
    """The configured URL, or SQLite at `path` (its folder created)."""
    if url:
        return url
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def check_database_url(url: str | None) -> None:
    """Load the configured database's dialect and driver now, without connecting.

    Start-up calls this: a URL whose driver package is not installed (postgresql+psycopg without
    psycopg) used to start a ready service that answered 500 to every feedback call. Raises
    FeedbackUnavailable naming the package; the message never shows the URL's password.
    """
    if not url:
        return
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        raise FeedbackUnavailable("SARING_FEEDBACK_DB_URL is not a database URL SQLAlchemy can read") from None
    try:
        create_engine(url).dispose()  # imports the dialect and its DBAPI module; opens no connection
    except ImportError as exc:
        package = (exc.name or str(exc)).split(".")[0]
        raise FeedbackUnavailable(
            f"SARING_FEEDBACK_DB_URL {shown} needs the Python package {package!r}, which is not installed: "
            f"install it (pip install {package}) or unset SARING_FEEDBACK_DB_URL to use SQLite"
        ) from exc
    except SQLAlchemyError as exc:
        raise FeedbackUnavailable(f"SARING_FEEDBACK_DB_URL {shown} cannot be used: {exc}") from exc


def make_engine(url: str) -> Engine:
    # A database server that restarted (PostgreSQL) leaves dead connections in the pool: each is checked
    # before use, so the first verdict after the restart is stored instead of answered 503.
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cursor.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit: 2xx means on disk
            cursor.execute("PRAGMA busy_timeout=30000")  # concurrent writers wait their turn, not fail
            cursor.close()

    return engine


class FeedbackStore:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # Replicas opening a fresh database at once would race to create the table (one of them
                # failing on a duplicate key): each takes this lock in turn, and later ones find the table.
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            metadata.create_all(conn)

    @classmethod
    def from_settings(cls, db_url: str | None, db_path: str | Path) -> FeedbackStore:
        return cls(database_url(db_url, db_path))

    def close(self) -> None:
        self.engine.dispose()

    def record(
        self,
        message_id: str,
        label: str,
        text: str,
        note: str | None = None,
        moderator_id: str | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
    ) -> tuple[FeedbackRow, bool]:
        """Store a verdict; (the stored row, True) when new, (the row stored earlier, False) when repeated."""
        values = dict(
            message_id=message_id,
            label=label,
            text=text,
            note=note,
            moderator_id=moderator_id,
            model_name=model_name,
            model_version=model_version,
            received_at=datetime.now(UTC),
        )
        try:
            with self.engine.begin() as conn:  # commits (and, on SQLite, fsyncs) before returning
                seq = conn.execute(feedback_table.insert().values(**values)).inserted_primary_key[0]
            return FeedbackRow(seq=seq, **values), True
        except IntegrityError:
            # Someone (maybe a retry of this very call) stored this (id, label) first: theirs stands.
            existing = self.get(message_id, label)
            if existing is None:  # the constraint fired on something else: not ours to hide
                raise
            return existing, False

    def get(self, message_id: str, label: str) -> FeedbackRow | None:
        query = select(feedback_table).where(feedback_table.c.message_id == message_id, feedback_table.c.label == label)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _row(row) if row else None

    def rows(self) -> Iterator[FeedbackRow]:
        """Every stored verdict, oldest first."""
        with self.engine.connect() as conn:
            for row in conn.execute(select(feedback_table).order_by(feedback_table.c.seq)).mappings():
                yield _row(row)

    def latest_per_message(self) -> list[FeedbackRow]:
        """One verdict per message id: the last one the desk gave (a correction replaces a mistake)."""
        latest: dict[str, FeedbackRow] = {}
        for row in self.rows():
            latest.pop(row.message_id, None)  # re-insert so the order is that of the latest verdicts
            latest[row.message_id] = row
        return list(latest.values())


def _row(mapping: Any) -> FeedbackRow:
    received = mapping["received_at"]
    if received.tzinfo is None:  # SQLite hands back naive datetimes; they were stored as UTC
        received = received.replace(tzinfo=UTC)
    return FeedbackRow(
        seq=mapping["seq"],
        message_id=mapping["message_id"],
        label=mapping["label"],
        text=mapping["text"],
        note=mapping["note"],
        moderator_id=mapping["moderator_id"],
        model_name=mapping["model_name"],
        model_version=mapping["model_version"],
        received_at=received,
    )


class AsyncFeedbackStore:
    """The store for the event loop: opened on first use (a service that never gets feedback never
    creates a database), every call on a small pool of its own so slow disks never stall scoring's
    tokenising threads."""

    def __init__(self, db_url: str | None, db_path: str | Path, threads: int = 4) -> None:
        self.db_url = db_url
        self.db_path = db_path
        self.threads = threads
        self._store: FeedbackStore | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._open_lock = threading.Lock()

    def _opened(self) -> FeedbackStore:
        with self._open_lock:
            if self._store is None:
                self._store = FeedbackStore.from_settings(self.db_url, self.db_path)
            return self._store

    async def record(self, **values: Any) -> tuple[FeedbackRow, bool]:
        """FeedbackStore.record off the event loop; a database failure is FeedbackUnavailable, never a 2xx."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="saring-feedback")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: self._opened().record(**values))
        except (SQLAlchemyError, OSError, ImportError) as exc:  # ImportError: a driver missing since start-up
            # The type only: driver messages can quote the statement's parameters (the text).
            logger.error("feedback not stored", extra={"fields": {"error": type(exc).__name__}})
            raise FeedbackUnavailable(
                f"feedback not stored: the database failed ({type(exc).__name__})", retry_after=5
            ) from exc

    def check(self) -> None:
        """Fail now, naming the missing package, if the configured database cannot be used at all."""
        check_database_url(self.db_url)

    async def close(self) -> None:
        """Wait for writes in progress, then release the database (it reopens on the next call)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True)
        store, self._store = self._store, None
        if store is not None:
            store.close()
