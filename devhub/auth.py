"""Users, tokens, roles and orgs, and the Hub's permission rules.

Anonymous callers read public repos; a bad token is always 401; writing needs a "write" token
whose user is the namespace or a member of the namespace org.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .wire import HubError

INVALID_TOKEN_MESSAGE = "Invalid credentials in Authorization header"


class Role(enum.StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class User:
    name: str
    token: str
    role: Role = Role.WRITE
    orgs: tuple[str, ...] = ()

    def can_write_to(self, namespace: str) -> bool:
        return self.role is Role.WRITE and self.owns(namespace)

    def owns(self, namespace: str) -> bool:
        """True when the namespace is the user's own or one of its orgs (whatever the role)."""
        return namespace == self.name or namespace in self.orgs


def parse_user(spec: str) -> User:
    """`NAME:TOKEN[:read|write]` -> User."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"--user expects NAME:TOKEN[:read|write], got {spec!r}")
    role = Role(parts[2]) if len(parts) == 3 else Role.WRITE
    return User(name=parts[0], token=parts[1], role=role)


def parse_org(spec: str) -> tuple[str, list[str]]:
    """`ORG:MEMBER[,MEMBER]` -> (org, members)."""
    org, sep, members = spec.partition(":")
    if not sep or not org or not members:
        raise ValueError(f"--org expects ORG:MEMBER[,MEMBER], got {spec!r}")
    return org, [m for m in members.split(",") if m]


@dataclass
class Directory:
    """Every known user and org; answers who a bearer token belongs to."""

    users: dict[str, User] = field(default_factory=dict)
    orgs: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, users: list[User], orgs: list[tuple[str, list[str]]]) -> Directory:
        memberships: dict[str, list[str]] = {}
        for org, members in orgs:
            for member in members:
                memberships.setdefault(member, []).append(org)
        by_token = {
            u.token: User(u.name, u.token, u.role, tuple(memberships.get(u.name, [])))
            for u in users
        }
        return cls(users=by_token, orgs=dict(orgs))

    def authenticate(self, authorization: str | None) -> User | None:
        """None for anonymous; HubError 401 for a token nobody owns."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        user = self.users.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, INVALID_TOKEN_MESSAGE)
        return user

    def by_name(self, name: str) -> User | None:
        """Some token's user of that name (the write one when the user has several)."""
        found = [u for u in self.users.values() if u.name == name]
        found.sort(key=lambda u: u.role is not Role.WRITE)
        return found[0] if found else None

    def is_namespace(self, name: str) -> bool:
        return name in self.orgs or any(u.name == name for u in self.users.values())


def require_user(user: User | None) -> User:
    if user is None:
        raise HubError(401, "You must be authenticated to do this (no token given)")
    return user


def require_write(user: User | None, namespace: str) -> User:
    """401 without a token, 403 for a read token or a foreign namespace."""
    user = require_user(user)
    if user.role is not Role.WRITE:
        raise HubError(403, "This token has a read role: it cannot write")
    if not user.owns(namespace):
        raise HubError(403, f"You don't have the rights to write in namespace {namespace!r}")
    return user


def can_read(user: User | None, namespace: str, private: bool) -> bool:
    return not private or (user is not None and user.owns(namespace))
