"""Who may call the endpoint: an inference key for the OpenAI routes, a separate admin key for publishing adapters,
and no endpoint reachable from other machines without a key.

Keys are pydantic SecretStr from the environment (FIELDKIT_API_KEY, FIELDKIT_ADMIN_KEY) or the run config, which
never writes them anywhere (fieldkit.config excludes them from every dump). They are compared in constant time,
and no message names them.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from pydantic import SecretStr

from fieldkit.config import ServeConfig
from services.serve.errors import OpenAIError, unauthorized

API_KEY_ENV = "FIELDKIT_API_KEY"
ADMIN_KEY_ENV = "FIELDKIT_ADMIN_KEY"


class ServeKeyError(ValueError):
    """The endpoint would start unprotected, or with keys that do not keep their roles apart."""


def _secret(env: str, configured: SecretStr | None) -> SecretStr | None:
    value = os.environ.get(env) or (configured.get_secret_value() if configured else "")
    return SecretStr(value) if value else None


def resolve_keys(serve: ServeConfig, host: str) -> tuple[SecretStr | None, SecretStr | None]:
    """(inference key, admin key): each from its variable, else the config. Refuses a non-loopback `host` without
    an inference key, and an admin key equal to the inference key (every client could then publish)."""
    api_key = _secret(API_KEY_ENV, serve.api_key)
    admin_key = _secret(ADMIN_KEY_ENV, serve.admin_key)
    if api_key is None and not is_loopback(host):
        raise ServeKeyError(
            f"serve.host {host!r} is not a loopback address and no API key is set, so anyone who reaches it could "
            f"use the model: set {API_KEY_ENV} (or serve.api_key), or bind 127.0.0.1"
        )
    if api_key is not None and admin_key is not None and _equal(api_key, admin_key.get_secret_value()):
        raise ServeKeyError(f"{ADMIN_KEY_ENV} equals the API key: give publishing a key of its own")
    return api_key, admin_key


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost. A host name is not: it may resolve to any interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bearer(authorization: str | None, key: SecretStr | None) -> None:
    """Raise 401 unless `authorization` is 'Bearer <key>' (no key configured: anyone may call)."""
    if key is None:
        return
    if not authorization:
        raise unauthorized("Missing API key: send it as 'Authorization: Bearer <key>'")
    scheme, _, sent = authorization.partition(" ")
    if scheme.lower() != "bearer" or not _equal(key, sent.strip()):
        raise unauthorized("Incorrect API key provided")


def check_admin(authorization: str | None, admin_key: SecretStr | None) -> None:
    """Publishing needs the admin key; without one configured it is off (403), never open."""
    if admin_key is None:
        raise OpenAIError(
            403,
            f"Publishing over HTTP is off: start the endpoint with {ADMIN_KEY_ENV} set to allow it",
            code="publishing_disabled",
        )
    check_bearer(authorization, admin_key)


def _equal(key: SecretStr, sent: str) -> bool:
    return hmac.compare_digest(sent.encode(), key.get_secret_value().encode())
