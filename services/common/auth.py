"""Identities: OAuth2 client-credentials bearer tokens (JWT, EdDSA), verified against a JWKS.

Every token names its subject and roles (claim `roles`):

    broker                      acts for the accounts its mandates name (claim `broker_id`)
    registry-operator:<JUR>     runs the registry of a jurisdiction
    national-registry:<JUR>     a national registry's integration
    regulator:<JUR>             reads its jurisdiction's audit stream and positions
    operator                    runs the venue

Production (`TONNE_ENV=production`) needs a JWKS and an issuer of its own; the development
issuer (`DevIssuer`, a key in a local folder) is refused there, so no development token
stays valid when configuration is missing.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, Request
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2, SecurityScopes
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import DomainError
from services.common.limits import RateLimiter

DEV_ISSUER = "tonne-dev"
AUDIENCE = "tonne"
ALGORITHM = "EdDSA"
Role = Literal["broker", "registry-operator", "national-registry", "regulator", "operator"]
ROLES: dict[str, str] = {
    "broker": "place and follow orders for mandated accounts",
    "registry-operator": "operate a jurisdiction's registry",
    "national-registry": "integrate a national registry",
    "regulator": "supervise a jurisdiction",
    "operator": "operate the venue",
}


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    env: Literal["development", "production"] = Field("development", validation_alias="TONNE_ENV")
    jwks_file: Path | None = Field(None, validation_alias="TONNE_AUTH_JWKS_FILE")
    issuer: str = Field(DEV_ISSUER, validation_alias="TONNE_AUTH_ISSUER")
    token_url: str = Field("/oauth/token", validation_alias="TONNE_AUTH_TOKEN_URL")
    dev_dir: Path = Field(Path(".run/auth"), validation_alias="TONNE_AUTH_DEV_DIR")
    # Per caller (token subject), per process.
    requests_per_second: int = Field(200, ge=1, validation_alias="TONNE_RATE_PER_SECOND")
    burst: int = Field(400, ge=1, validation_alias="TONNE_RATE_BURST")


@dataclass(frozen=True)
class Identity:
    subject: str
    roles: frozenset[str]
    broker_id: str = ""

    def jurisdictions(self, role: str) -> frozenset[str]:
        """The jurisdictions this identity holds `role` for (`regulator:CN` -> CN)."""
        return frozenset(r.split(":", 1)[1] for r in self.roles if r.startswith(role + ":"))

    def holds(self, role: str) -> bool:
        return role in self.roles or bool(self.jurisdictions(role))

    @property
    def operator(self) -> bool:
        return "operator" in self.roles


def unauthenticated(reason: str) -> DomainError:
    return DomainError("AUTH_UNAUTHENTICATED", reason, [], 401)


def forbidden(reason: str) -> DomainError:
    return DomainError("AUTH_FORBIDDEN", reason, [], 403)


class Verifier:
    def __init__(self, jwks: dict[str, Any], issuer: str) -> None:
        self._keys = {key.key_id: key for key in jwt.PyJWKSet.from_dict(jwks).keys}
        self._issuer = issuer

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> Verifier:
        if settings.env == "production":
            if settings.jwks_file is None or settings.issuer == DEV_ISSUER:
                raise RuntimeError("production needs TONNE_AUTH_JWKS_FILE and an issuer other than the dev issuer")
            return cls(json.loads(settings.jwks_file.read_text()), settings.issuer)
        path = settings.jwks_file or DevIssuer(settings.dev_dir).jwks_path
        return cls(json.loads(path.read_text()), settings.issuer)

    def verify(self, token: str) -> Identity:
        try:
            key_id = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(key_id)
            if key is None:
                raise unauthenticated("the token is signed by an unknown key")
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise unauthenticated(f"the token is not valid: {exc}") from exc
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise unauthenticated("the token's roles claim is not a list of strings")
        return Identity(str(claims["sub"]), frozenset(roles), str(claims.get("broker_id", "")))


class DevIssuer:
    """A local issuer for development and tests: one Ed25519 key in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.jwks_path = folder / "jwks.json"
        key_path = folder / "dev-signing-key.pem"
        if not key_path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            key_path.write_bytes(pem)
            key_path.chmod(0o600)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        self._key = key
        public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
        self.key_id = public["kid"] = uuid.uuid5(uuid.NAMESPACE_OID, public["x"]).hex
        public |= {"use": "sig", "alg": ALGORITHM}
        if not self.jwks_path.exists() or json.loads(self.jwks_path.read_text()) != {"keys": [public]}:
            self.jwks_path.write_text(json.dumps({"keys": [public]}))

    def mint(self, subject: str, roles: list[str], broker_id: str = "", ttl_seconds: int = 3600) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": DEV_ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "exp": now + ttl_seconds,
            "roles": roles,
        }
        if broker_id:
            claims["broker_id"] = broker_id
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.key_id})


def security_scheme(token_url: str) -> OAuth2:
    flows = OAuthFlows(clientCredentials=OAuthFlowClientCredentials(tokenUrl=token_url, scopes=ROLES))
    return OAuth2(flows=flows, scheme_name="oauth2", auto_error=False)


def authenticator(verifier: Verifier, scheme: OAuth2, limiter: RateLimiter | None = None) -> Any:
    """A FastAPI dependency: `Security(authenticate, scopes=["broker"])` yields the caller's
    Identity when it holds one of those roles; 401 without a valid token, 403 without the
    role, 429 with Retry-After past the caller's rate."""

    async def authenticate(
        security: SecurityScopes, request: Request, header: str | None = Depends(scheme)
    ) -> Identity:
        scheme_name, _, token = (header or "").partition(" ")
        if scheme_name.lower() != "bearer" or not token:
            raise unauthenticated("a bearer token is required")
        identity = verifier.verify(token)
        if limiter is not None:
            limiter.take(identity.subject)
        if security.scopes and not any(identity.holds(role) for role in security.scopes):
            raise forbidden(f"this needs one of the roles {', '.join(security.scopes)}")
        request.state.identity = identity
        return identity

    return authenticate


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid bearer token (code AUTH_UNAUTHENTICATED)"},
    403: {"description": "the caller's roles do not allow this (code AUTH_FORBIDDEN)"},
    429: {"description": "the caller's request rate is exceeded (code RATE_LIMITED, Retry-After)"},
}


class Auth:
    """The verifier and the OpenAPI security scheme a service's routes declare."""

    def __init__(self, verifier: Verifier, token_url: str, limiter: RateLimiter | None = None) -> None:
        self.scheme = security_scheme(token_url)
        self.authenticate = authenticator(verifier, self.scheme, limiter)

    @classmethod
    def from_env(cls) -> Auth:
        settings = AuthSettings()
        limiter = RateLimiter(settings.requests_per_second, settings.burst)
        return cls(Verifier.from_settings(settings), settings.token_url, limiter)


def _cli() -> None:
    import typer

    cli = typer.Typer(add_completion=False, help="The development token issuer.")

    @cli.command()
    def mint(
        subject: str,
        role: Annotated[list[str], typer.Option(help="e.g. broker, regulator:CN (repeatable)")],
        broker_id: Annotated[str, typer.Option()] = "",
        ttl_seconds: Annotated[int, typer.Option()] = 3600,
    ) -> None:
        """Print a bearer token signed by the development issuer (never valid in production)."""
        settings = AuthSettings()
        if settings.env == "production":
            raise typer.BadParameter("the development issuer is refused in production")
        typer.echo(DevIssuer(settings.dev_dir).mint(subject, role, broker_id, ttl_seconds))

    @cli.command()
    def jwks() -> None:
        """Print the path of the development issuer's JWKS (created if missing)."""
        typer.echo(DevIssuer(AuthSettings().dev_dir).jwks_path)

    cli()


if __name__ == "__main__":
    _cli()
