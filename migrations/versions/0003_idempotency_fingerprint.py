"""idempotency fingerprint: a create repeated with the same key must carry the same body

Revision ID: 0003_idempotency_fingerprint
Revises: 0002
Create Date: 2026-11-24 15:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_idempotency_fingerprint"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: instant on a large table. Rows created before it have none, and a
    # repeat of their key is accepted whatever its body, as it was then.
    op.add_column(
        "tasks", sa.Column("idempotency_fingerprint", sa.String(length=64), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("tasks", "idempotency_fingerprint")
