"""Xet access tokens and signed xorb URLs: stateless, HMAC-signed with the server's secret.

A token names one repo, a scope (read or write), the user it was issued to and its expiry; the
storage routes check it on every request. Signing with the persisted secret keeps tokens that a
client cached valid across a devhub restart, as the Hub's stay valid across its deploys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from .storage import RepoKey
from .wire import HubError

READ, WRITE = "read", "write"
DEFAULT_TOKEN_TTL_S = 3600
_TOKEN_DOMAIN = b"devhub-xet-token:"
_URL_DOMAIN = b"devhub-xet-fetch:"


@dataclass(frozen=True)
class XetToken:
    key: RepoKey
    scope: str
    user: str | None
    exp: int

    def encode(self, secret: bytes) -> str:
        payload = [
            self.key.repo_type,
            self.key.namespace,
            self.key.name,
            self.scope,
            self.user,
            self.exp,
        ]
        body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
        return f"xet_{body}.{_sign(secret, _TOKEN_DOMAIN, body)}"

    @classmethod
    def decode(cls, secret: bytes, text: str) -> XetToken | None:
        """The token, or None when it is not one of ours (expiry is checked by `check`)."""
        if not text.startswith("xet_"):
            return None
        body, _, sig = text[4:].partition(".")
        if not hmac.compare_digest(sig, _sign(secret, _TOKEN_DOMAIN, body)):
            return None
        try:
            raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            return cls(RepoKey(raw[0], raw[1], raw[2]), raw[3], raw[4], int(raw[5]))
        except (ValueError, IndexError, TypeError):
            return None


def _sign(secret: bytes, domain: bytes, body: str) -> str:
    return hmac.new(secret, domain + body.encode(), hashlib.sha256).hexdigest()[:40]


def bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def check(secret: bytes, authorization: str | None, scope: str) -> XetToken:
    """The request's Xet token; 401 when missing, forged or expired, 403 for a read token writing."""
    token = XetToken.decode(secret, bearer(authorization))
    if token is None:
        raise HubError(401, "Invalid or missing Xet access token")
    if token.exp <= time.time():
        raise HubError(401, "Xet access token expired")
    if scope == WRITE and token.scope != WRITE:
        raise HubError(403, "This Xet token has read scope: it cannot upload")
    return token


def sign_fetch(secret: bytes, xorb: str, exp: int) -> str:
    """The signature of an unauthenticated range-read URL of one xorb, valid until `exp`."""
    return _sign(secret, _URL_DOMAIN, f"{xorb}/{exp}")


def check_fetch(secret: bytes, xorb: str, exp: str, sig: str) -> None:
    if not exp.isdigit() or not hmac.compare_digest(sig, sign_fetch(secret, xorb, int(exp))):
        raise HubError(403, "Invalid xorb URL signature")
    if int(exp) <= time.time():
        raise HubError(403, "Xorb URL expired")
