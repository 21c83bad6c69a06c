"""Hot statements, compiled once and run on the driver's own cursor.

SQLAlchemy's execution path costs 30–70 µs per statement on top of SQLite's 5–10 µs:
it rebuilds an execution context, looks the statement up in its cache and wraps every
row. A ledger write is a handful of statements, and the process engine makes several
per approval, so that overhead was most of what a run's bookkeeping cost.

``Prepared`` keeps a Core statement as written — the same table definitions, types and
dialects — but compiles it once per dialect and set of parameter names, and runs the
compiled SQL on the DBAPI cursor of the transaction's own connection. Parameters go
through the column types' own bind processors and rows through their result
processors, so values read and written this way are exactly those SQLAlchemy would
read and write; driver errors come out as SQLAlchemy's exceptions.

Only statements whose parameters are all plain bound values can be prepared: a
statement that needs a value rendered at execution time (``IN`` lists, some
``LIMIT``s) or a Python-side default that is not a constant is refused when first run.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Select

Processor = Callable[[Any], Any] | None


@dataclass
class _Plan:
    """One statement compiled for one dialect and one set of parameter names."""

    sql: str
    order: tuple[str, ...] | None  # positional drivers: the parameters' order
    binds: Mapping[str, Processor]
    defaults: dict[str, Any]  # the statement's own values and constant column defaults
    row: type[tuple[Any, ...]] | None  # the row type of a statement that returns rows
    result_types: list[Any]
    readers: list[Processor] | None = field(default=None)  # from the first result's types

    def parameters(self, given: Mapping[str, Any]) -> Any:
        values = {**self.defaults, **given} if self.defaults else given
        if self.order is not None:
            return tuple(
                process(values[name]) if (process := self.binds[name]) else values[name]
                for name in self.order
            )
        return {
            name: process(values[name]) if process else values[name]
            for name, process in self.binds.items()
        }

    def rows(self, cursor: Any, dialect: Dialect) -> list[Any]:
        fetched = cursor.fetchall()
        assert self.row is not None
        if self.readers is None:
            self.readers = [
                kind.dialect_impl(dialect).result_processor(dialect, described[1])
                for kind, described in zip(self.result_types, cursor.description, strict=True)
            ]
        readers = self.readers
        if not any(readers):
            return [self.row(*raw) for raw in fetched]
        return [
            self.row(
                *(read(value) if read else value for read, value in zip(readers, raw, strict=True))
            )
            for raw in fetched
        ]


class Prepared:
    """A Core statement run on the driver's cursor; see the module docstring."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._plans: dict[tuple[str, str, tuple[str, ...]], _Plan] = {}

    def rows(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[Any]:
        """The rows the statement returns (SELECT, or DML with RETURNING)."""
        plan = self._plan(conn.dialect, params or {})
        cursor = _execute(conn, plan, plan.parameters(params or {}))
        try:
            return plan.rows(cursor, conn.dialect)
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any | None:
        rows = self.rows(conn, params)
        return rows[0] if rows else None

    def one(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any:
        rows = self.rows(conn, params)
        if len(rows) != 1:
            raise LookupError(f"{len(rows)} rows where one was expected: {self.statement}")
        return rows[0]

    def scalar(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row; None when there is no row."""
        row = self.first(conn, params)
        return row[0] if row is not None else None

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> int:
        """Runs a statement that returns no rows; the number of rows it touched."""
        plan = self._plan(conn.dialect, params or {})
        cursor = _execute(conn, plan, plan.parameters(params or {}))
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Runs the statement once per parameter set (all with the same names)."""
        if rows:
            plan = self._plan(conn.dialect, rows[0])
            batch = [plan.parameters(row) for row in rows]
            _execute(conn, plan, batch, many=True).close()

    def _plan(self, dialect: Dialect, params: Mapping[str, Any]) -> _Plan:
        key = (dialect.name, dialect.driver, tuple(params))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _compile(self.statement, dialect, tuple(params))
        return plan


def _execute(conn: Connection, plan: _Plan, values: Any, many: bool = False) -> Any:
    """Runs ``plan`` on a new cursor of the transaction's connection; the cursor, open."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        (cursor.executemany if many else cursor.execute)(plan.sql, values)
    except conn.dialect.loaded_dbapi.Error as exc:
        cursor.close()
        raise _wrapped(exc, plan.sql, values, conn.dialect) from exc
    return cursor


def _compile(statement: ClauseElement, dialect: Dialect, names: tuple[str, ...]) -> _Plan:
    compiled = statement.compile(dialect=dialect, column_keys=list(names))
    assert isinstance(compiled, SQLCompiler)
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError(f"cannot prepare a statement rendered at execution: {compiled}")
    defaults = {  # values written into the statement itself, such as ``id == 1``
        name: bind.effective_value
        for name, bind in compiled.binds.items()
        if name not in names and not bind.required
    }
    prefetched = [(column, column.default) for column in compiled.insert_prefetch]
    prefetched += [(column, column.onupdate) for column in compiled.update_prefetch]
    for column, default in prefetched:
        if default is None or not default.is_scalar:
            raise ValueError(f"cannot prepare {column}'s default: pass a value for it")
        defaults[column.key] = default.arg  # type: ignore[attr-defined]
    binds = {
        name: bind.type.dialect_impl(dialect).bind_processor(dialect)
        for name, bind in compiled.binds.items()
    }
    if compiled.escaped_bind_names:
        raise ValueError(f"cannot prepare parameter names that need escaping: {compiled}")
    order = tuple(compiled.positiontup or ()) if compiled.positional else None
    if compiled.effective_returning:
        columns = list(compiled.effective_returning)
    elif isinstance(statement, Select):
        columns = list(statement.selected_columns)
    else:
        columns = []
    result_types = [column.type for column in columns]
    row = namedtuple("Row", [column.key for column in columns]) if columns else None  # type: ignore[misc]
    return _Plan(compiled.string, order, binds, defaults, row, result_types)


def _wrapped(exc: Exception, sql: str, params: Any, dialect: Dialect) -> StatementError:
    return DBAPIError.instance(sql, params, exc, dialect.loaded_dbapi.Error, dialect=dialect)
