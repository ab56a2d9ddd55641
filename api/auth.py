"""Who is calling: the app (a JWT whose ``sub`` is the user id), a backend
(an API key) or an operator (an operator key)."""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, Query, Request, status

from cortex.settings import Settings

JWT_ALGORITHM = "HS256"


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def current_user(
    request: Request, settings: Annotated[Settings, Depends(settings_of)]
) -> str:
    token = _bearer(request)
    if token is None:
        raise _unauthorized("missing bearer token")
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["sub", "exp"]},
        )
    except jwt.PyJWTError:
        raise _unauthorized("invalid or expired token") from None
    subject = claims["sub"]
    if not isinstance(subject, str) or not 0 < len(subject) <= 200:
        raise _unauthorized("token subject is not a user id")
    return subject


STREAM_AUDIENCE = "cortex-stream"


def stream_user(
    request: Request,
    settings: Annotated[Settings, Depends(settings_of)],
    ticket: Annotated[str | None, Query(max_length=2000)] = None,
) -> str:
    """The stream takes the app's JWT, or, for browsers (whose EventSource
    cannot send headers), a short-lived stream ticket in the query. A ticket
    carries its own audience, so it opens a stream and nothing else."""
    if ticket is None or _bearer(request) is not None:
        return current_user(request, settings)
    try:
        claims = jwt.decode(
            ticket,
            settings.jwt_secret,
            algorithms=[JWT_ALGORITHM],
            audience=STREAM_AUDIENCE,
            options={"require": ["sub", "exp", "aud"]},
        )
    except jwt.PyJWTError:
        raise _unauthorized("invalid or expired stream ticket") from None
    return claims["sub"]


def issue_stream_ticket(settings: Settings, user_id: str) -> str:
    now = int(time.time())
    return jwt.encode(
        {
            "sub": user_id,
            "aud": STREAM_AUDIENCE,
            "iat": now,
            "exp": now + settings.stream_ticket_seconds,
        },
        settings.jwt_secret,
        algorithm=JWT_ALGORITHM,
    )


def _key_matches(offered: str | None, keys: list[str]) -> bool:
    return offered is not None and any(
        hmac.compare_digest(offered.encode(), key.encode()) for key in keys
    )


def require_api_key(
    request: Request, settings: Annotated[Settings, Depends(settings_of)]
) -> None:
    offered = request.headers.get("x-api-key") or _bearer(request)
    if not _key_matches(offered, settings.api_keys):
        raise _unauthorized("missing or unknown API key")


def require_operator(
    request: Request, settings: Annotated[Settings, Depends(settings_of)]
) -> None:
    offered = (
        request.headers.get("x-operator-key")
        or _bearer(request)
        or _basic_password(request)
    )
    if not _key_matches(offered, settings.operator_keys):
        # Basic lets a browser ask for the key when an operator opens the dashboard.
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or unknown operator key",
            headers={"WWW-Authenticate": 'Basic realm="cortex operators"'},
        )


def _basic_password(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return (
            base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            or None
        )
    except (binascii.Error, UnicodeDecodeError):
        return None


def issue_token(settings: Settings, user_id: str, ttl_seconds: int = 24 * 3600) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": user_id, "iat": now, "exp": now + ttl_seconds},
        settings.jwt_secret,
        algorithm=JWT_ALGORITHM,
    )


CurrentUser = Annotated[str, Depends(current_user)]
StreamUser = Annotated[str, Depends(stream_user)]
AppSettings = Annotated[Settings, Depends(settings_of)]
