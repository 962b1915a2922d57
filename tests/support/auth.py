"""Bearer tokens for tests: HS256 JWTs signed with the secret `make_settings` configures
(devstack.auth mints them), and RS256/ES256 keys and JWKS documents made on the spot."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devstack.auth import LocalIssuer

SECRET = "tests-only-hs256-secret-0123456789abcdef"  # ≥ 32 bytes, as AUTH_JWT_SECRET must be
ISSUER = LocalIssuer(SECRET)
STATIC_TOKEN = "tests-static-service-token"  # the SERVICE_API_TOKEN opt-in, where a test sets it


def token(*workspaces: uuid.UUID | str, role: str = "clinician", sub: str = "test-clinician",
          ttl_seconds: float = 6 * 3600.0) -> str:
    return ISSUER.token(workspaces, role=role, sub=sub, ttl_seconds=ttl_seconds)


def auth(*workspaces: uuid.UUID | str, role: str = "clinician",
         sub: str = "test-clinician") -> dict[str, str]:
    """`Authorization` header for a caller who may reach exactly `workspaces`."""
    return bearer(token(*workspaces, role=role, sub=sub))


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# --- asymmetric keys and JWKS ------------------------------------------------------------


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    """The public half of `key` as a JWK with `kid`, `alg` and `use`."""
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwk["alg"] = "RS256"
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        jwk["alg"] = "ES256"
    return {**jwk, "kid": kid, "use": "sig"}


def jwks(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str | None,
           *workspaces: uuid.UUID | str, role: str = "clinician", sub: str = "test-clinician",
           audience: str = "ai-cache", ttl_seconds: float = 6 * 3600.0, **claims: Any) -> str:
    """An RS256 (RSA key) or ES256 (EC key) JWT."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "role": role, "aud": audience,
                               "workspaces": [str(ws) for ws in workspaces],
                               "iat": now, "exp": now + int(ttl_seconds), **claims}
    algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


class JwksServer:
    """A real HTTP server on 127.0.0.1 that serves `document` at /jwks.json (in a thread),
    counting reads; `delay` slows each answer; `start()` may come later than construction
    (an identity provider that is down when the service starts)."""

    def __init__(self, document: bytes, port: int) -> None:
        self.document = document
        self.delay = 0.0
        self.reads = 0
        self.port = port
        self.url = f"http://127.0.0.1:{port}/jwks.json"
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.reads += 1
                time.sleep(owner.delay)
                if self.path != "/jwks.json":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(owner.document)))
                self.end_headers()
                self.wfile.write(owner.document)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
