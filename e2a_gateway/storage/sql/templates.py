"""The SQL of `/v1` email templates: an account's templates, each query scoped by its owner's
`user_id`; an alias is unique within the account (a partial unique index)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from e2a_gateway.storage.base import AlreadyExists, EmailTemplate, LimitReached, TemplateChanges
from e2a_gateway.storage.sql.runner import Runner
from e2a_gateway.storage.sql.transaction import Transaction

TEMPLATE_COLUMNS = (
    "seq, id, user_id, name, alias, subject, text, html, created_at, updated_at, "
    "from_starter_alias, from_starter_version"
)


def decode_template(row: Sequence[Any]) -> EmailTemplate:
    """A row of TEMPLATE_COLUMNS."""
    return EmailTemplate(
        seq=int(row[0]),
        id=row[1],
        user_id=row[2],
        name=row[3],
        alias=row[4],
        subject=row[5],
        text=row[6],
        html=row[7],
        created_at=row[8],
        updated_at=row[9],
        from_starter_alias=row[10],
        from_starter_version=row[11],
    )


def _row(tx: Transaction, user_id: str, template_id: str) -> Any:
    return tx.first(
        f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE id = ? AND user_id = ?",
        (template_id, user_id),
    )


class TemplatesSql(Runner):
    """`Templates` in SQL."""

    async def add_template(self, template: EmailTemplate, max_per_user: int) -> None:
        """Insert a template unless the user has `max_per_user` already (LimitReached) or
        another with its alias (AlreadyExists)."""

        def insert(tx: Transaction) -> None:
            tx.lock(template.user_id)
            count = tx.one("SELECT count(*) FROM templates WHERE user_id = ?", (template.user_id,))
            if int(count[0]) >= max_per_user:
                raise LimitReached(f"at most {max_per_user} templates per account")
            tx.execute(
                "INSERT INTO templates (id, user_id, name, alias, subject, text, html, "
                "created_at, updated_at, from_starter_alias, from_starter_version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    template.id,
                    template.user_id,
                    template.name,
                    template.alias,
                    template.subject,
                    template.text,
                    template.html,
                    template.created_at,
                    template.updated_at,
                    template.from_starter_alias,
                    template.from_starter_version,
                ),
                conflict=AlreadyExists(template.alias or template.id),
            )

        await self._write(insert)

    async def template_page(
        self, user_id: str, limit: int, before_seq: int | None
    ) -> list[EmailTemplate]:
        """The user's templates, newest first, before `before_seq`."""
        rows = await self._read(
            lambda tx: tx.all(
                f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE user_id = ? AND seq < ? "
                "ORDER BY seq DESC LIMIT ?",
                (user_id, before_seq if before_seq is not None else 2**62, limit),
            )
        )
        return [decode_template(row) for row in rows]

    async def get_template(self, user_id: str, template_id: str) -> EmailTemplate | None:
        """One of the user's templates by id."""
        row = await self._read(lambda tx: _row(tx, user_id, template_id))
        return None if row is None else decode_template(row)

    async def template_by_alias(self, user_id: str, alias: str) -> EmailTemplate | None:
        """One of the user's templates by alias."""
        row = await self._read(
            lambda tx: tx.first(
                f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE user_id = ? AND alias = ?",
                (user_id, alias),
            )
        )
        return None if row is None else decode_template(row)

    async def update_template(
        self, user_id: str, template_id: str, changes: TemplateChanges, updated_at: str
    ) -> EmailTemplate | None:
        """Apply `changes` (an empty alias or html clears it) to one of the user's templates."""

        def update(tx: Transaction) -> EmailTemplate | None:
            if _row(tx, user_id, template_id) is None:
                return None
            assignments: dict[str, Any] = {
                column: value or None if column in ("alias", "html") else value
                for column, value in (
                    ("name", changes.name),
                    ("alias", changes.alias),
                    ("subject", changes.subject),
                    ("text", changes.text),
                    ("html", changes.html),
                )
                if value is not None
            }
            assignments["updated_at"] = updated_at
            columns = ", ".join(f"{column} = ?" for column in assignments)
            tx.execute(
                f"UPDATE templates SET {columns} WHERE id = ? AND user_id = ?",
                (*assignments.values(), template_id, user_id),
                conflict=AlreadyExists(changes.alias or template_id),
            )
            return decode_template(_row(tx, user_id, template_id))

        return await self._write(update)

    async def delete_template(self, user_id: str, template_id: str) -> bool:
        """Delete one of the user's templates."""
        deleted = await self._write(
            lambda tx: (
                tx.execute(
                    "DELETE FROM templates WHERE id = ? AND user_id = ?", (template_id, user_id)
                ).rowcount
            )
        )
        return bool(deleted)
