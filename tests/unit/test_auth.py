"""Bearer tokens: verified against the JWKS, refused when forged, expired or misplaced."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from fastapi import FastAPI, Security
from fastapi.testclient import TestClient

from services.common.auth import (
    AUTH_RESPONSES,
    AuthSettings,
    DevIssuer,
    Identity,
    Verifier,
    authenticator,
    security_scheme,
)
from services.common.errors import DomainError


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    return DevIssuer(tmp_path / "auth")


def verifier_of(issuer: DevIssuer) -> Verifier:
    return Verifier.from_settings(AuthSettings(TONNE_AUTH_JWKS_FILE=issuer.jwks_path))


def test_a_minted_token_verifies_to_its_identity(issuer: DevIssuer) -> None:
    token = issuer.mint("broker-a", ["broker"], broker_id="broker-a")
    identity = verifier_of(issuer).verify(token)
    assert identity == Identity("broker-a", frozenset({"broker"}), "broker-a")
    regulator = verifier_of(issuer).verify(issuer.mint("cn-mee", ["regulator:CN"]))
    assert regulator.jurisdictions("regulator") == {"CN"} and regulator.holds("regulator")
    assert not regulator.holds("broker") and not regulator.operator


@pytest.mark.parametrize(
    "forge",
    [
        lambda i, o: o.mint("broker-a", ["operator"]),  # another issuer's key
        lambda i, o: i.mint("broker-a", ["broker"], ttl_seconds=-10),  # expired
        lambda i, o: i.mint("broker-a", ["operator"])[:-4] + "AAAA",  # signature tampered
        lambda i, o: jwt.encode({"sub": "x", "roles": ["operator"]}, "secret", algorithm="HS256"),  # no kid, HMAC
        lambda i, o: "not a token",
    ],
)
def test_forged_expired_and_foreign_tokens_are_refused(issuer: DevIssuer, tmp_path: Path, forge: object) -> None:
    other = DevIssuer(tmp_path / "other")
    token = forge(issuer, other)  # type: ignore[operator]
    with pytest.raises(DomainError) as refused:
        verifier_of(issuer).verify(token)
    assert (refused.value.code, refused.value.http_status) == ("AUTH_UNAUTHENTICATED", 401)


def test_production_refuses_to_start_without_its_own_jwks_and_issuer(issuer: DevIssuer) -> None:
    with pytest.raises(RuntimeError):
        Verifier.from_settings(AuthSettings(TONNE_ENV="production"))
    with pytest.raises(RuntimeError):  # the dev issuer's name is refused even with a JWKS
        Verifier.from_settings(AuthSettings(TONNE_ENV="production", TONNE_AUTH_JWKS_FILE=issuer.jwks_path))


def test_an_endpoint_declares_its_role_and_refuses_the_others(issuer: DevIssuer) -> None:
    scheme = security_scheme("/oauth/token")
    authenticate = authenticator(verifier_of(issuer), scheme)
    app = FastAPI()

    @app.exception_handler(DomainError)
    async def domain_error(_: object, exc: DomainError) -> object:
        from fastapi.responses import JSONResponse

        return JSONResponse(status_code=exc.http_status, content=exc.body())

    @app.get("/audit", responses=AUTH_RESPONSES)
    async def audit(identity: Identity = Security(authenticate, scopes=["regulator"])) -> dict[str, list[str]]:
        return {"jurisdictions": sorted(identity.jurisdictions("regulator"))}

    client = TestClient(app)
    regulator = {"authorization": f"Bearer {issuer.mint('th-onep', ['regulator:TH'])}"}
    broker = {"authorization": f"Bearer {issuer.mint('broker-a', ['broker'], 'broker-a')}"}
    assert client.get("/audit", headers=regulator).json() == {"jurisdictions": ["TH"]}
    assert client.get("/audit", headers=broker).status_code == 403
    assert client.get("/audit").status_code == 401
    operation = client.get("/openapi.json").json()["paths"]["/audit"]["get"]
    assert operation["security"] == [{"oauth2": ["regulator"]}]
    assert {"401", "403"} <= set(operation["responses"])
