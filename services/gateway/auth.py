"""Bearer tokens: four roles, scoped to a subject; stored only as SHA-256 hashes."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import HTTPException, Request
from sqlalchemy import select

from services.gateway import books

ROLES = ("coordinator", "school", "municipality", "funder", "board")  # board: subject board_id (drawing rights)
# Roles whose subject receives statements: a municipality (CBS code) or another funder (funder id).
STATEMENT_ROLES = ("municipality", "funder")


@dataclass(frozen=True)
class Principal:
    role: str
    subject: str | None
    token_id: str

    @property
    def is_coordinator(self) -> bool:
        return self.role == "coordinator"

    def may_act_for_school(self, school_id: str) -> bool:
        return self.is_coordinator or (self.role == "school" and self.subject == school_id)

    def may_read_municipality(self, code: str) -> bool:
        return self.is_coordinator or (self.role == "municipality" and self.subject == code)

    def may_read_funder(self, funder: str) -> bool:
        """The coordinator, or the statement's own funder (a municipality token for a municipality's)."""
        return self.is_coordinator or (self.role in STATEMENT_ROLES and self.subject == funder)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """(token id, secret token). The token is shown once; only its hash is stored."""
    return f"tok_{secrets.token_hex(6)}", f"zp_{secrets.token_urlsafe(32)}"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    token = token.strip()
    state = request.app.state
    if state.coordinator_token and hmac.compare_digest(token, state.coordinator_token):
        return Principal("coordinator", None, "bootstrap")
    digest = hash_token(token)
    async with state.read_engine.connect() as conn:
        row = (await conn.execute(select(books.tokens.c.id, books.tokens.c.role, books.tokens.c.subject,
                                         books.tokens.c.revoked_at)
                                  .where(books.tokens.c.token_hash == digest))).first()
    if row is None or row.revoked_at is not None:
        raise _unauthorized("invalid or revoked token")
    return Principal(row.role, row.subject, row.id)


def forbid(detail: str = "this token may not access that resource") -> HTTPException:
    return HTTPException(403, detail)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
