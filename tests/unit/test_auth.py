"""Token verification and key sets, without a server: claims, algorithms, the verified-token
memory, roles, and how a JWKS is (re)read."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.auth.jwks import JwksError, JwksKeys, parse_jwks
from app.auth.principal import Action, Principal, Role
from app.auth.verifier import AuthError, TokenVerifier
from devstack.auth import mint
from tests.support.auth import SECRET, ec_key, jwks, public_jwk, rsa_key, signed

WS = uuid.UUID("00000000-0000-4000-8000-00000000f001")
OTHER = uuid.UUID("00000000-0000-4000-8000-00000000f002")


def verifier(**kwargs: Any) -> TokenVerifier:
    options: dict[str, Any] = {"audience": "ai-cache", "hs256_secret": SECRET.encode()}
    options.update(kwargs)
    return TokenVerifier(**options)


# Tokens are minted when the module is collected and used up to a whole suite later.
TTL = 6 * 3600


def raw(secret: str = SECRET, algorithm: str = "HS256", **overrides: Any) -> str:
    """An HS256 token with the usual claims, `overrides` applied (None removes a claim)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "dr-a", "role": "clinician", "workspaces": [str(WS)],
                              "aud": "ai-cache", "iat": now, "exp": now + TTL}
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(claims, secret, algorithm=algorithm)


async def reason_of(v: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthError) as refused:
        await v.verify(token)
    return refused.value.reason


# --- roles -----------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "allowed"), [
    ("clinician", set(Action) - {Action.CACHE_INVALIDATE}),
    ("operator", set(Action)),
    ("service", set(Action)),
    ("viewer", set()),  # a role the service does not know may do nothing
    ("", set()),
])
def test_what_each_role_may_do(role: str, allowed: set[Action]) -> None:
    who = Principal(sub="x", role=role, workspaces=frozenset({WS}), via="jwt")
    assert {a for a in Action if who.may(a)} == allowed


def test_a_principal_reaches_only_its_workspaces_unless_it_is_the_static_token() -> None:
    named = Principal(sub="x", role=Role.CLINICIAN, workspaces=frozenset({WS}), via="jwt")
    assert named.reaches(WS) and not named.reaches(OTHER)
    static = Principal(sub="x", role=Role.SERVICE, workspaces=None, via="static")
    assert static.reaches(WS) and static.reaches(OTHER)


# --- claims and algorithms -------------------------------------------------------------


async def test_a_good_token_gives_its_claims() -> None:
    who = await verifier().verify(mint(SECRET, workspaces=[WS, OTHER], role="operator",
                                       sub="dr-a"))
    assert who == Principal(sub="dr-a", role="operator", workspaces=frozenset({WS, OTHER}),
                            via="jwt")


@pytest.mark.parametrize(("token", "reason"), [
    (raw(exp=int(time.time()) - 3600), "expired"),
    (raw(secret="another-secret-of-at-least-32-bytes!"), "invalid"),
    (raw(aud="someone-else"), "invalid"),
    (raw(aud=None), "invalid"),
    (raw(exp=None), "invalid"),  # no expiry: refused
    (raw(sub=None), "invalid"),
    (raw(sub=""), "claims"),
    (raw(role=None), "claims"),
    (raw(workspaces=None), "claims"),
    (raw(workspaces=str(WS)), "claims"),
    (raw(workspaces=["not-a-uuid"]), "claims"),
    (raw(workspaces=[7]), "claims"),
    (raw(nbf=int(time.time()) + TTL), "invalid"),
    ("not.a.jwt", "malformed"),
    ("x" * 9000, "malformed"),
    (jwt.encode({"sub": "a", "role": "service", "workspaces": [str(WS)], "aud": "ai-cache",
                 "exp": int(time.time()) + TTL}, None, algorithm="none"), "unknown_key"),
    (raw(secret=SECRET * 2, algorithm="HS512"), "unknown_key"),
], ids=["expired", "bad-signature", "audience", "no-audience", "no-exp", "no-sub",
        "empty-sub", "no-role", "no-workspaces", "workspaces-not-a-list",
        "workspace-not-a-uuid", "workspace-a-number", "not-yet-valid", "not-a-jwt",
        "too-long", "alg-none", "hs512"])
async def test_refused_tokens(token: str, reason: str) -> None:
    assert await reason_of(verifier(), token) == reason


async def test_expiry_allows_the_configured_clock_skew_only() -> None:
    slightly_late = mint(SECRET, workspaces=[WS], ttl_seconds=-10)
    assert (await verifier(leeway_seconds=30).verify(slightly_late)).sub == "devstack"
    assert await reason_of(verifier(leeway_seconds=0), slightly_late) == "expired"


async def test_an_issuer_when_configured_is_required() -> None:
    v = verifier(issuer="https://idp.example")
    assert await reason_of(v, mint(SECRET, workspaces=[WS])) == "invalid"
    assert await reason_of(v, mint(SECRET, workspaces=[WS], iss="https://evil.example")) \
        == "invalid"
    assert (await v.verify(mint(SECRET, workspaces=[WS], iss="https://idp.example"))).sub


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_an_hs256_token_signed_with_the_public_key_is_refused() -> None:
    """Algorithm confusion: the RSA public key (which anyone has) used as an HMAC secret."""
    key = rsa_key()
    keys = JwksKeys(_loader(jwks(public_jwk(key, "k1"))), source="test", refresh_seconds=60,
                    min_refetch_seconds=60)
    await keys.start()
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = _b64(json.dumps({"sub": "a", "role": "service", "workspaces": [str(WS)],
                            "aud": "ai-cache", "exp": int(time.time()) + 60}).encode())
    signature = _b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    v = TokenVerifier(audience="ai-cache", jwks=keys)
    assert await reason_of(v, f"{head}.{body}.{signature}") == "unknown_key"
    # ...while an RS256 token with that key id is accepted by the same verifier.
    assert (await v.verify(signed(key, "k1", WS))).workspaces == frozenset({WS})


# --- the static token ------------------------------------------------------------------


async def test_the_static_token_is_a_service_in_every_workspace_only_when_configured() -> None:
    static = "a-static-token-for-local-runs"
    who = await verifier(static_token=static).verify(static)
    assert who.role == Role.SERVICE and who.workspaces is None and who.via == "static"
    assert await reason_of(verifier(), static) == "malformed"
    assert await reason_of(verifier(static_token=static), static + "x") == "malformed"


def test_a_verifier_without_keys_says_so() -> None:
    v = TokenVerifier(audience="ai-cache")
    assert not v.configured and v.state == "not-configured"


# --- the verified-token memory ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_verified_token_is_remembered_until_its_expiry_or_the_cache_time() -> None:
    clock = Clock()
    v = verifier(clock=clock, cache_seconds=60, leeway_seconds=0)
    token = mint(SECRET, workspaces=[WS], ttl_seconds=30)
    first = await v.verify(token)
    assert await v.verify(token) is first  # remembered: the same object, no new check
    clock.now += 31  # past exp (30 s), within the cache time (60 s): forgotten, and
    again = await v.verify(token)  # checked anew (PyJWT's own clock judges exp then)
    assert again == first and again is not first

    long_lived = mint(SECRET, workspaces=[WS], ttl_seconds=3600)
    remembered = await v.verify(long_lived)
    clock.now += 61  # past the cache time: verified again (a new Principal)
    again = await v.verify(long_lived)
    assert again == remembered and again is not remembered


async def test_the_memory_is_bounded() -> None:
    v = verifier(cache_size=3)
    tokens = [mint(SECRET, workspaces=[WS], sub=f"user-{i}") for i in range(5)]
    for token in tokens:
        await v.verify(token)
    assert len(v._remembered) == 3 and tokens[0] not in v._remembered


async def test_refused_tokens_are_never_remembered() -> None:
    v = verifier()
    token = mint(SECRET, workspaces=["nope"])
    for _ in range(2):
        assert await reason_of(v, token) == "claims"
    assert v._remembered == {}


# --- key sets --------------------------------------------------------------------------


def _loader(*documents: bytes, fail: list[bool] | None = None, reads: list[float] | None = None
            ) -> Any:
    """Returns each document in turn (the last one forever); `fail` raises OSError."""
    queue = list(documents)

    async def load() -> bytes:
        if reads is not None:
            reads.append(time.monotonic())
        if fail and fail[0]:
            raise OSError("unreachable")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return load


def test_parse_keeps_rs256_and_es256_signing_keys_only() -> None:
    rsa_jwk, ec_jwk = public_jwk(rsa_key(), "r"), public_jwk(ec_key(), "e")
    hmac_jwk = {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "kid": "h"}
    encryption = {**public_jwk(rsa_key(), "enc"), "use": "enc"}
    junk = {"kty": "nope", "kid": "j"}
    keys = parse_jwks(jwks(rsa_jwk, ec_jwk, hmac_jwk, encryption, junk))
    assert sorted((k.key_id, k.algorithm_name) for k in keys) == [("e", "ES256"),
                                                                  ("r", "RS256")]


@pytest.mark.parametrize("raw", [b"{", b"[]", b'{"keys": {}}', jwks()])
def test_unusable_key_sets_are_errors(raw: bytes) -> None:
    with pytest.raises(JwksError):
        parse_jwks(raw)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_key_choice_by_kid_and_algorithm() -> None:
    r1, r2, e1 = rsa_key(), rsa_key(), ec_key()
    keys = JwksKeys(_loader(jwks(public_jwk(r1, "r1"), public_jwk(r2, "r2"),
                                 public_jwk(e1, "e1"))),
                    source="t", refresh_seconds=300, min_refetch_seconds=10)
    await keys.start()
    found = await keys.key("r2", "RS256")
    assert found is not None and found.key_id == "r2"
    assert await keys.key("r2", "ES256") is None  # the kid exists, for another algorithm
    assert await keys.key(None, "RS256") is None  # two RSA keys: no kid is ambiguous
    only_ec = await keys.key(None, "ES256")
    assert only_ec is not None and only_ec.key_id == "e1"


async def test_an_unknown_kid_reads_the_set_again_at_most_every_min_refetch_seconds() -> None:
    old, new = rsa_key(), rsa_key()
    reads: list[float] = []
    clock = Monotonic()
    keys = JwksKeys(_loader(jwks(public_jwk(old, "old")), jwks(public_jwk(new, "new")),
                            reads=reads), source="t", refresh_seconds=300,
                    min_refetch_seconds=10, clock=clock)
    await keys.start()
    assert len(reads) == 1
    clock.now += 1
    assert await keys.key("new", "RS256") is None  # too soon after the first read
    assert len(reads) == 1
    clock.now += 10
    # Many requests at once with the new kid: one read, shared.
    found = await asyncio.gather(*(keys.key("new", "RS256") for _ in range(20)))
    assert len(reads) == 2 and all(k is not None and k.key_id == "new" for k in found)
    assert await keys.key("old", "RS256") is None  # rotated out


async def test_a_stale_set_is_refreshed_in_the_background_and_a_failure_keeps_the_keys() -> None:
    key = rsa_key()
    fail = [False]
    reads: list[float] = []
    clock = Monotonic()
    keys = JwksKeys(_loader(jwks(public_jwk(key, "k")), fail=fail, reads=reads),
                    source="t", refresh_seconds=300, min_refetch_seconds=10, clock=clock)
    await keys.start()
    fail[0] = True
    clock.now += 301
    assert await keys.key("k", "RS256") is not None  # served from the keys it has...
    await asyncio.sleep(0)  # ...while the background read runs (and fails)
    await asyncio.sleep(0)
    assert len(reads) == 2 and keys.available
    assert await keys.key("k", "RS256") is not None
    await keys.aclose()


async def test_no_keys_yet_means_a_read_when_a_token_needs_one() -> None:
    key = ec_key()
    fail = [True]
    clock = Monotonic()
    keys = JwksKeys(_loader(jwks(public_jwk(key, "k")), fail=fail), source="t",
                    refresh_seconds=300, min_refetch_seconds=10, clock=clock)
    with pytest.raises(OSError):
        await keys.start()
    assert not keys.available
    fail[0] = False
    assert await keys.key("k", "ES256") is None  # the failed start was just now
    clock.now += 10
    assert await keys.key("k", "ES256") is not None
