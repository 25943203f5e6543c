"""pending actions (confirm before a delete), undo records, longer conversation titles

Expand only: two new tables, a nullable column and a wider varchar. The release before this one
keeps working against it (it never writes `before`, and its titles are at most 80 characters).

Revision ID: 0009_pending_actions_undo
Revises: 0010_search_indexes
Create Date: 2026-12-03 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_pending_actions_undo"
down_revision: str | None = "0010_search_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column(
        "conversations",
        "title",
        existing_type=sa.String(length=80),
        type_=sa.String(length=200),
        existing_nullable=False,
    )
    op.add_column(
        "chat_tool_calls",
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.create_table(
        "chat_pending_actions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("turn_id", sa.UUID(), nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("arguments", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=9), server_default="pending", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'cancelled')", name="ck_chat_pending_actions_status"
        ),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["turn_id"], ["chat_turns.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("turn_id", "seq", name="uq_chat_pending_actions_turn_seq"),
    )
    op.create_table(
        "chat_undos",
        sa.Column("turn_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["turn_id"], ["chat_turns.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("turn_id"),
    )


def downgrade() -> None:
    op.drop_table("chat_undos")
    op.drop_table("chat_pending_actions")
    op.drop_column("chat_tool_calls", "before")
    op.alter_column(
        "conversations",
        "title",
        existing_type=sa.String(length=200),
        type_=sa.String(length=80),
        existing_nullable=False,
    )
