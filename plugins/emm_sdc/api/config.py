"""API settings from the environment (no secrets here: tokens are verified against Cognito's public keys)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache


def _flag(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ApiSettings:
    """Where Cognito is and how the API behaves.

    ``EMM_COGNITO_REGION`` / ``EMM_COGNITO_USER_POOL_ID`` / ``EMM_COGNITO_CLIENT_ID`` name the user pool
    and the app client whose access tokens are accepted; ``EMM_COGNITO_ENDPOINT`` is where clients log in
    (the AWS endpoint by default, moto's server in the embedded default); ``EMM_COGNITO_JWKS_URL`` and
    ``EMM_COGNITO_ISSUER`` default to the pool's.
    """

    region: str
    user_pool_id: str
    client_id: str
    endpoint: str
    jwks_url: str
    issuer: str
    allow_anonymous: bool
    max_records: int
    url_ttl_s: int

    @property
    def configured(self) -> bool:
        return bool(self.user_pool_id and self.client_id)


@cache
def api_settings() -> ApiSettings:
    region = os.environ.get("EMM_COGNITO_REGION", "eu-west-1")
    pool = os.environ.get("EMM_COGNITO_USER_POOL_ID", "")
    endpoint = os.environ.get("EMM_COGNITO_ENDPOINT", f"https://cognito-idp.{region}.amazonaws.com").rstrip("/")
    issuer = os.environ.get("EMM_COGNITO_ISSUER", f"https://cognito-idp.{region}.amazonaws.com/{pool}")
    return ApiSettings(
        region=region,
        user_pool_id=pool,
        client_id=os.environ.get("EMM_COGNITO_CLIENT_ID", ""),
        endpoint=endpoint,
        jwks_url=os.environ.get("EMM_COGNITO_JWKS_URL", f"{issuer}/.well-known/jwks.json"),
        issuer=issuer,
        allow_anonymous=_flag("EMM_API_ALLOW_ANONYMOUS"),
        max_records=int(os.environ.get("EMM_API_MAX_RECORDS", "20000")),
        url_ttl_s=int(os.environ.get("EMM_API_URL_TTL_SECONDS", "3600")),
    )
