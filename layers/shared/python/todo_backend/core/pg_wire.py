"""pg8000 with each statement in one round trip instead of three.

pg8000 runs an unnamed statement as Parse+Sync, Describe+Sync, then Bind+Execute+Sync, waiting
for the server after each. The extended protocol allows sending Parse, Bind, Describe (portal),
Execute and Sync together, as libpq-based drivers do; the statement stays unnamed, so this is
safe under PgBouncer's transaction pooling. Measured by `make bench` (round trips per request).

pg8000 also rewrites each statement's `%s` placeholders to `$1, $2, ...` by scanning it character
by character, on every execution; SQLAlchemy sends the same few statement texts over and over, so
the rewritten text is cached here (per process, bounded).
"""

from datetime import datetime
from functools import lru_cache
from typing import Any

from pg8000.converters import array_out, make_params, timestamptz_in
from pg8000.core import (
    DESCRIBE,
    EXECUTE_MSG,
    NULL_BYTE,
    PORTAL,
    SYNC_MSG,
    Context,
    _flush,
    _write,
)
from pg8000.dbapi import IntegrityError, ProgrammingError, convert_paramstyle
from pg8000.exceptions import DatabaseError, InterfaceError
from pg8000.legacy import Connection, Cursor

TIMESTAMPTZ_OID = 1184


def parse_timestamptz(text: str) -> datetime | str:
    """PostgreSQL's timestamptz output; ~10x faster than pg8000's strptime-based parser."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return timestamptz_in(text)  # infinity, or years outside Python's range


def quote_array_element(text: str) -> str:
    """A string as a quoted element of an array literal: always quoted, `\\` and `"` escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def array_literal(values: list[Any]) -> str:
    """A Python list as PostgreSQL's array input syntax, every string element quoted.

    pg8000 leaves a string element unquoted unless it is exactly "NULL" or holds a special
    character, so "null" or "Null" became an SQL NULL inside the array. Quoting every string
    makes each one arrive exactly as sent. Other element types keep pg8000's own conversion.
    """
    elements = []
    for value in values:
        if value is None:
            elements.append("NULL")
        elif isinstance(value, list):
            elements.append(array_literal(value))
        elif isinstance(value, str):
            elements.append(quote_array_element(value))
        else:
            elements.append(array_out(value))
    return "{" + ",".join(elements) + "}"


@lru_cache(maxsize=512)
def numbered_placeholders(statement: str) -> str:
    """`%s` placeholders as `$1, $2, ...` (and `%%` as `%`), as pg8000 would rewrite them."""
    converted, _ = convert_paramstyle("format", statement, ())
    return converted


class PipelinedCursor(Cursor):
    """pg8000's cursor, with the placeholder rewrite of positional (`format`) statements cached."""

    def execute(self, operation: str, args: Any = (), stream: Any = None) -> "PipelinedCursor":
        # Anything but a positional statement on an open autocommit connection (the engine's
        # only use) takes pg8000's own path: its errors for closed cursors, implicit BEGIN, COPY.
        if (
            stream is not None
            or not args
            or self.paramstyle != "format"
            or not isinstance(args, (tuple, list))
            or self._c is None
            or self._c._sock is None
            or not self._c.autocommit
        ):
            super().execute(operation, args, stream)
            return self
        try:
            self._context = self._c.execute_unnamed(
                numbered_placeholders(operation), vals=args, oids=self._input_oids
            )
        except DatabaseError as error:
            # The mapping pg8000's own Cursor.execute applies.
            message = error.args[0]
            code = message.get("C") if isinstance(message, dict) else None
            mapped = {"28000": InterfaceError, "23505": IntegrityError}.get(code, ProgrammingError)
            raise mapped(message) from None
        rows = self._context.rows
        self._row_iter = iter(() if rows is None else rows)
        self._input_oids = ()
        self.input_types = []
        return self


class PipelinedConnection(Connection):
    """A pg8000 connection whose unnamed statements take one round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_in_adapter(TIMESTAMPTZ_OID, parse_timestamptz)
        # Every list parameter (tasks.tags, and any other array) goes through this adapter.
        self.register_out_adapter(list, array_literal)

    def cursor(self) -> PipelinedCursor:
        return PipelinedCursor(self)

    def execute_unnamed(
        self, statement: str, vals: Any = (), oids: Any = (), stream: Any = None
    ) -> Context:
        # Converted before anything is written: a value pg8000 cannot convert fails here.
        params = make_params(self.py_types, vals)
        context = Context(statement, stream=stream)
        if self._sock is None:
            raise InterfaceError("connection is closed")
        # A dead socket must surface as InterfaceError("network error"), which SQLAlchemy treats
        # as a disconnect (the pool drops the connection and Database.run reconnects): pg8000's
        # helpers do that for most socket errors, but not for a reset on the first read.
        try:
            self.send_PARSE(NULL_BYTE, statement, oids)
            self.send_BIND(NULL_BYTE, params)
            self._send_message(DESCRIBE, PORTAL + NULL_BYTE)
            _write(self._sock, EXECUTE_MSG)
            _write(self._sock, SYNC_MSG)
            _flush(self._sock)
            self.handle_messages(context)
        except OSError as error:
            raise InterfaceError("network error") from error
        return context

    def execute_simple(self, statement: str) -> Context:
        """Statements without parameters take pg8000's simple-query path: same error rule."""
        try:
            return super().execute_simple(statement)
        except OSError as error:
            raise InterfaceError("network error") from error
