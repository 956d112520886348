"""The history database behind SQLAlchemy: schema, connection, and the queries the rest use.

One run is one row of ``runs``; each test's verdict and figures are rows of ``results``, keyed
by run and (test, combination). The schema version lives in ``meta``: a database written by a
newer infergate is refused, never written with an older layout.

SQLite (the default, ``.infergate/history.db``) runs in WAL mode with a busy timeout and takes
its write lock when a transaction begins (``BEGIN IMMEDIATE``), so several CI jobs ingesting at
once queue instead of failing with "database is locked" halfway. PostgreSQL uses transactions
and an advisory lock around schema creation and around each run's replacement.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

SCHEMA_VERSION = 1
DEFAULT_PATH = Path(".infergate") / "history.db"
BUSY_TIMEOUT_S = 60  # one ingest holds the lock well under a second; a fleet queues behind it

# figure column -> the direction that is a regression (for changes and the gate).
FIGURES = {
    "p50_ms": "up",
    "normalised": "up",
    "instructions": "up",
    "memory_mb": "up",
    "cosine": "down",
    "task_score": "down",
}

metadata = sa.MetaData()

meta = sa.Table(
    "meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # What makes "the same run": its session id, else a hash of its content (ingest.py).
    sa.Column("run_key", sa.String(128), nullable=False, unique=True),
    # When the run wrote its results (results.json's "created"): the series' time order.
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("commit", sa.String(64)),
    sa.Column("branch", sa.String(256)),
    sa.Column("ci_job_url", sa.Text),
    sa.Column("machine_id", sa.String(256), nullable=False),
    sa.Column("machine", sa.JSON),  # the id's components: vendor, family, ISA flags, GPU ...
    sa.Column("libraries", sa.JSON),
    sa.Column("environment", sa.JSON),  # python, platform, cpu, cores
    sa.Column("status", sa.String(64)),
    sa.Column("complete", sa.Boolean),
    sa.Column("source", sa.Text),
    sa.Column("ingested", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("runs_machine_created", runs.c.machine_id, runs.c.created)

results = sa.Table(
    "results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("test", sa.String(128), nullable=False),
    sa.Column("combo", sa.String(256), nullable=False),
    sa.Column("model", sa.String(128)),
    sa.Column("backend", sa.String(128)),
    sa.Column("precision", sa.String(64)),
    sa.Column("outcome", sa.String(32)),
    sa.Column("verdict", sa.String(32)),  # the gate's own status: pass, regressed, ...
    sa.Column("reason", sa.Text),
    sa.Column("duration_s", sa.Float),
    *(sa.Column(name, sa.Float) for name in FIGURES),
    sa.Column("threshold_pct", sa.Float),  # the perf gate's threshold for this combination
    sa.Column("min_cosine", sa.Float),  # the accuracy tolerance
    sa.UniqueConstraint("run_id", "test", "combo", name="results_run_test_combo"),
)
sa.Index("results_combo", results.c.combo, results.c.test)


class HistoryError(RuntimeError):
    """A history database that cannot be used; the message names it and what is wrong."""


def default_url(root: Path | str = ".") -> str:
    return f"sqlite:///{(Path(root) / DEFAULT_PATH).resolve()}"


def _shown(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        # pysqlite's own transaction handling would BEGIN late (deferred) and upgrade to a
        # write lock mid-transaction, where a busy timeout cannot help: we begin ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        _into_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _into_wal(cursor) -> None:
    """Switch to WAL, waiting for the lock. SQLite answers "database is locked" at once, without
    its busy handler, when another process holds the file while it is being created (two shards
    starting together: 7 of 200 tries here), so the wait is ours."""
    import sqlite3

    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


class Store:
    """An open history database. ``Store.open(url)`` creates the schema where there is none
    and refuses one of a newer version."""

    def __init__(self, engine: sa.Engine, url: str):
        self.engine, self.url = engine, url

    @classmethod
    def open(cls, url: str) -> Store:
        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError as exc:
            raise HistoryError(f"history URL {url!r} is not a database URL: {exc}") from None
        try:
            engine = (_sqlite_engine(parsed) if parsed.get_backend_name() == "sqlite"
                      else sa.create_engine(parsed, pool_pre_ping=True))
        except (ImportError, sa.exc.NoSuchModuleError) as exc:
            raise HistoryError(f"history URL {_shown(parsed)}: no driver for it here ({exc}); "
                               f"PostgreSQL needs 'postgresql+psycopg://...'") from None
        store = cls(engine, _shown(parsed))
        store._prepare()
        return store

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def lock(self, connection: sa.Connection, name: str) -> None:
        """Serialise with other writers on ``name`` until the transaction ends (PostgreSQL;
        SQLite's BEGIN IMMEDIATE already holds the whole database)."""
        if self.dialect == "postgresql":
            key = zlib.crc32(name.encode()) - 2**31  # a signed 32-bit advisory key
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.begin() as connection:
                yield connection
        except sa.exc.SQLAlchemyError as exc:  # unreachable, locked out, damaged, altered
            raise HistoryError(f"history database {self.url}: "
                               f"{getattr(exc, 'orig', None) or exc}") from None

    def _prepare(self) -> None:
        with self.transaction() as connection:
            self.lock(connection, "infergate.history.schema")
            stored = None
            if sa.inspect(connection).has_table("meta"):  # read before creating anything
                stored = connection.execute(
                    sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
            if stored is None:
                metadata.create_all(connection, checkfirst=True)
                connection.execute(meta.insert().values(key="schema_version",
                                                        value=str(SCHEMA_VERSION)))
            elif not stored.isdigit() or int(stored) > SCHEMA_VERSION:
                raise HistoryError(
                    f"history database {self.url} has schema version {stored}, newer than "
                    f"this infergate's {SCHEMA_VERSION}: upgrade infergate to read or write it")
            elif int(stored) < SCHEMA_VERSION:  # no older layout exists yet
                raise HistoryError(f"history database {self.url} has schema version {stored}, "
                                   f"which this infergate cannot migrate")

    def schema_version(self) -> int:
        with self.transaction() as connection:
            return int(connection.execute(
                sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one())

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
