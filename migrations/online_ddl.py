"""Schema changes that keep a table of millions writable: indexes built (and dropped)
CONCURRENTLY, which PostgreSQL refuses inside a transaction block. Migrations run one transaction
each (env.py); these leave it for an autocommit block."""

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from alembic import op


@contextmanager
def outside_a_transaction() -> Iterator[None]:
    """Alembic's autocommit block. Entering it, alembic asks the connection for its isolation
    level, and pg8000 runs that query in a transaction it opens first (BEGIN; SHOW ...), still
    open when the connection switches to autocommit: end it (it holds nothing else)."""
    with op.get_context().autocommit_block():
        op.execute("ROLLBACK")
        yield


def _drop_if_invalid(name: str) -> None:
    """A build that failed leaves an INVALID index of that name, which IF NOT EXISTS would keep."""
    op.execute(
        f"""
        DO $$ BEGIN
          IF EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                     WHERE c.relname = '{name}' AND NOT i.indisvalid) THEN
            EXECUTE 'DROP INDEX {name}';
          END IF;
        END $$
        """
    )


def create_indexes(definitions: Mapping[str, str]) -> None:
    """`CREATE INDEX CONCURRENTLY <name> ON <definition>` each, inside `outside_a_transaction`."""
    for name, definition in definitions.items():
        _drop_if_invalid(name)
        op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {definition}")


def drop_indexes(names: Iterable[str]) -> None:
    """`DROP INDEX CONCURRENTLY` for each, inside `outside_a_transaction`."""
    for name in names:
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
