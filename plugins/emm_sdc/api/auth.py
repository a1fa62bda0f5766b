"""Who is calling: Cognito access tokens, verified the way API Gateway's Cognito authorizer does.

The real clients send ``Authorization: <access token>`` with no ``Bearer``
prefix (both forms are accepted). A token is accepted only if its RS256
signature verifies against the user pool's JWKS, it has not expired, its
issuer is the pool, ``token_use`` is ``access`` and ``client_id`` is the app
client. Groups (``cognito:groups``) decide what the caller sees:

* ``emm-team``: everything indexed, released or not;
* ``itf-<inst>`` (``itf-exi``, ``itf-emu``, ``itf-emr``): everything of that
  instrument and its processing logs, plus what is released;
* ``public`` and anonymous callers (when ``EMM_API_ALLOW_ANONYMOUS`` is on):
  released files only.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jwt

from emm_sdc.api.config import ApiSettings
from emm_sdc.core.naming import INSTRUMENTS

TEAM_GROUP = "emm-team"
PUBLIC_GROUP = "public"
ITF_GROUP_PREFIX = "itf-"


class Unauthorized(Exception):
    """The request carries no acceptable token (answered 401)."""


@dataclass(frozen=True)
class Principal:
    """The caller and what they may see."""

    username: str | None
    groups: tuple[str, ...] = field(default_factory=tuple)

    @property
    def anonymous(self) -> bool:
        return self.username is None

    @property
    def team(self) -> bool:
        return TEAM_GROUP in self.groups

    @property
    def itf_instruments(self) -> tuple[str, ...]:
        """Instruments whose ITF group the caller is in."""
        return tuple(g.removeprefix(ITF_GROUP_PREFIX) for g in self.groups
                     if g.startswith(ITF_GROUP_PREFIX) and g.removeprefix(ITF_GROUP_PREFIX) in INSTRUMENTS)

    def may_see_unreleased(self, instrument: str) -> bool:
        return self.team or instrument in self.itf_instruments

    def log_instruments(self) -> tuple[str, ...]:
        """Instruments whose processing logs the caller may read."""
        return tuple(INSTRUMENTS) if self.team else self.itf_instruments


@cache
def _jwks_client(url: str) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=3600, timeout=10)


class _VerifiedTokens:
    """Tokens already verified, until they expire (a client sends the same token for an hour)."""

    def __init__(self, size: int = 4096):
        self.size = size
        self.items: OrderedDict[tuple[str, ApiSettings], dict[str, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, token: str, settings: ApiSettings) -> dict[str, Any] | None:
        with self.lock:
            claims = self.items.get((token, settings))
            if claims is None:
                return None
            if claims["exp"] <= time.time():
                del self.items[(token, settings)]
                return None
            self.items.move_to_end((token, settings))
            return claims

    def put(self, token: str, settings: ApiSettings, claims: dict[str, Any]) -> None:
        with self.lock:
            self.items[(token, settings)] = claims
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_verified = _VerifiedTokens()


def verify_token(token: str, settings: ApiSettings) -> dict[str, Any]:
    """The claims of a valid Cognito access token for our app client; :class:`Unauthorized` otherwise."""
    cached = _verified.get(token, settings)
    if cached is not None:
        return cached
    claims = _verify(token, settings)
    _verified.put(token, settings, claims)
    return claims


def _verify(token: str, settings: ApiSettings) -> dict[str, Any]:
    if not settings.configured:
        raise Unauthorized("this API has no Cognito user pool configured")
    try:
        key = _jwks_client(settings.jwks_url).get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["RS256"], issuer=settings.issuer,
                            options={"require": ["exp", "iat", "iss", "token_use"]}, leeway=30)
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired; log in again (tokens last 60 minutes)") from None
    except jwt.PyJWKClientConnectionError as exc:
        raise Unauthorized(f"the user pool's signing keys could not be fetched: {exc}") from None
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"the token is not valid: {exc}") from None
    if claims.get("token_use") != "access":
        raise Unauthorized("an access token is needed (AuthenticationResult.AccessToken), not an ID token")
    if claims.get("client_id") != settings.client_id:
        raise Unauthorized("the token was issued to another app client")
    return claims


def principal_from_header(authorization: str | None, settings: ApiSettings) -> Principal:
    """The caller of a request from its ``Authorization`` header (raw token or ``Bearer <token>``)."""
    token = (authorization or "").strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    if not token:
        if settings.allow_anonymous:
            return Principal(None)
        raise Unauthorized("log in first: send the Cognito access token in the Authorization header")
    claims = verify_token(token, settings)
    groups = claims.get("cognito:groups") or []
    return Principal(str(claims.get("username") or claims.get("sub")), tuple(str(g) for g in groups))
