"""An OIDC provider in miniature for tests: signing keys made on the spot, their JWKS (as a
file, or served over HTTP on loopback), and tokens signed with them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://idp.flywheel.test/realms/ml"
AUDIENCE = "flywheel"


@dataclass
class IdentityProvider:
    """Keys by id (RSA `rsa-<generation>`, EC P-256 `ec-<generation>`: a new generation is a
    key rotation), and how many times its JWKS was served."""

    generation: int = 1

    rsa_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    served: int = 0

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        return {
            "keys": [
                rsa_jwk | {"kid": f"rsa-{self.generation}", "use": "sig", "alg": "RS256"},
                ec_jwk | {"kid": f"ec-{self.generation}", "use": "sig", "alg": "ES256"},
            ]
        }

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()))
        return path

    def token(
        self,
        roles: list[str] | None = None,
        *,
        subject: str = "alice",
        audience: str = AUDIENCE,
        issuer: str = ISSUER,
        expires_in: float = 600,
        not_before_in: float = 0,
        kid: str | None = None,
        algorithm: str = "RS256",
        extra: dict[str, Any] | None = None,
    ) -> str:
        now = time.time()
        claims: dict[str, Any] = {
            "sub": subject,
            "iss": issuer,
            "aud": audience,
            "iat": int(now),
            "nbf": int(now + not_before_in),
            "exp": int(now + expires_in),
            "roles": roles if roles is not None else ["reader"],
        } | (extra or {})
        key = self.ec_key if algorithm.startswith("ES") else self.rsa_key
        kid = kid or f"{'ec' if algorithm.startswith('ES') else 'rsa'}-{self.generation}"
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})

    @contextmanager
    def serving_jwks(self) -> Iterator[str]:
        """Serves the JWKS over HTTP on loopback; yields its URL."""
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(provider.jwks()).encode()
                provider.served += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/certs"
        finally:
            server.shutdown()
            server.server_close()


def bearer(token: str) -> tuple[tuple[str, str]]:
    """Call metadata presenting `token`."""
    return (("authorization", f"Bearer {token}"),)


async def expect(call: object, code: grpc.StatusCode, fragment: str = "") -> None:
    """Await `call` and check it failed with `code`, its details containing `fragment`."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call  # type: ignore[misc]
    assert failure.value.code() == code, failure.value.details()
    assert fragment in (failure.value.details() or ""), failure.value.details()
