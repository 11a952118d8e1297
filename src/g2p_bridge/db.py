"""Engines, sessions and the two things every worker needs from the database: transactions and
claims that two workers can never both win."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Dialect,
    Engine,
    String,
    Table,
    any_,
    create_engine,
    event,
    insert,
    literal,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import (
    TimeoutError as PoolTimeout,
)
from sqlalchemy.orm import Session, sessionmaker

from g2p_bridge.models.base import utcnow


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    # A database error's text (logged, or stored as a failure reason) otherwise quotes the
    # statement's parameters: beneficiaries' names and financial addresses.
    kwargs.setdefault("hide_parameters", True)
    if database_url.startswith("sqlite"):
        return _sqlite_engine(database_url, **kwargs)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    # A pooled connection the server closed (a restart) is replaced at checkout, so the first
    # request after the database comes back succeeds instead of failing on a dead connection.
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(database_url, **kwargs)


def _sqlite_engine(database_url: str, **kwargs: Any) -> Engine:
    engine = create_engine(
        database_url, connect_args={"timeout": 60, "check_same_thread": False}, **kwargs
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own handling is lazy).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # SQLite ignores FOR UPDATE: taking the write lock at BEGIN makes every transaction's
        # read-then-claim atomic, which is what SKIP LOCKED gives on PostgreSQL.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def sqlite_path(database_url: str) -> Path | None:
    prefix = "sqlite:///"
    if database_url.startswith(prefix) and database_url != prefix + ":memory:":
        return Path(database_url[len(prefix) :])
    return None


def is_database_outage(exc: BaseException) -> bool:
    """The database is away (stopped, restarting, unreachable, a connection cut, the pool out of
    connections), not something wrong with the statement: worth the same request again later.
    Integrity and programming errors are not."""
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """The caller's unit of work: commits on success, rolls back on any exception."""
    with session_factory() as session, session.begin():
        yield session


def lease_expiry(seconds: float, now: datetime | None = None) -> datetime:
    return (now or utcnow()) + timedelta(seconds=seconds)


def bulk_insert(
    session: Session, model: Any, rows: list[dict[str, Any]], *, binary: bool = False
) -> None:
    """Inserts many rows in the session's transaction. On PostgreSQL through COPY, several times
    faster than INSERT for the thousands of rows an ingest request or a batch brings; rows must
    all carry the same keys, every NOT NULL column included (COPY applies no defaults).

    ``binary``: COPY in PostgreSQL's binary format, each value sent as its column's type (a
    third of the client's CPU of the text format, and no parsing of text on the server). For
    rows whose values are already of the column's Python type (``str``, ``Decimal``, aware
    ``datetime``, ``bool``, ``int``), as ingest's are; a column of a type not known here keeps
    the text format."""
    if not rows:
        return
    table: Table = model.__table__
    if not is_postgres(session):
        session.execute(insert(table), rows)
        return
    columns = list(rows[0])
    # Values in database form: amounts and timestamps as psycopg adapts them natively.
    connection: Any = session.connection().connection.driver_connection
    import psycopg

    dialect = session.get_bind().dialect
    types = _binary_types(dialect, table, tuple(columns)) if binary else None
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    if types is not None:
        statement += " (FORMAT BINARY)"
    try:
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            if types is not None:
                copy.set_types(types)
            # Each row's values in column order, picked in C (itemgetter of one key gives the
            # value itself, not a 1-tuple).
            values = itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
            for row in rows:
                copy.write_row(values(row))
    except psycopg.errors.IntegrityError as exc:
        # The same exception SQLAlchemy raises for an INSERT, so callers handle one kind.
        raise IntegrityError(statement, None, exc) from exc
    except psycopg.DataError as exc:
        # A value longer than its column, say: raised raw it escaped the handlers (and the log
        # masking rules) written for SQLAlchemy's kind.
        raise DataError(statement, None, exc) from exc
    except psycopg.InterfaceError as exc:
        raise InterfaceError(statement, None, exc) from exc
    except psycopg.OperationalError as exc:
        # A connection lost mid-COPY: the kind SQLAlchemy raises for a statement that lost it.
        raise OperationalError(statement, None, exc) from exc


# PostgreSQL's name (as psycopg knows it) of each column type a binary COPY may carry; the
# type's parameters (a varchar's length, a numeric's scale) are the server's to apply.
_BINARY_TYPES = {
    "VARCHAR": "varchar",
    "TEXT": "text",
    "NUMERIC": "numeric",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "BOOLEAN": "bool",
    "SMALLINT": "int2",
    "INTEGER": "int4",
    "BIGINT": "int8",
}


@cache
def _binary_types(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> list[str] | None:
    """The types to COPY ``columns`` of ``table`` in binary, or None when one is not known."""
    names = []
    for column in columns:
        compiled = table.c[column].type.compile(dialect=dialect)
        name = _BINARY_TYPES.get(compiled.split("(", 1)[0].strip())
        if name is None:
            return None
        names.append(name)
    return names


def one_of(session: Session, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """``column IN values`` for thousands of values. On PostgreSQL one array parameter
    (``= ANY(:values)``): the statement text stays the same whatever the count, so it is parsed
    and planned once, instead of a statement with a thousand placeholders each time."""
    if is_postgres(session):
        any_value: ColumnElement[bool] = column == any_(literal(list(values), ARRAY(String)))
        return any_value
    in_values: ColumnElement[bool] = column.in_(values)
    return in_values


_Row = TypeVar("_Row")


class MissingRow(LookupError):
    """A row that must be there (a foreign key points at it, or this step holds its claim) is
    not: raised instead of carrying on with None. The step's transaction rolls back."""


def get_required(session: Session, model: type[_Row], key: Any) -> _Row:
    """``session.get`` for a row whose absence is a broken invariant, not an answer."""
    row = session.get(model, key)
    if row is None:
        raise MissingRow(f"{model.__name__} {key!r} does not exist")
    return row


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
