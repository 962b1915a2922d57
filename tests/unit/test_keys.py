from __future__ import annotations

import base64
import hmac
import uuid

import pytest

from app.cache.keys import KeyBuilder, normalise

WS = uuid.UUID("11111111-1111-4111-8111-111111111111")
WS2 = uuid.UUID("22222222-2222-4222-8222-222222222222")
CLIENT = uuid.UUID("33333333-3333-4333-8333-333333333333")


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("What  is\tthe PLAN?", "What is the PLAN?"),  # case is kept (test_normalisation)
        ("  leading and trailing  ", "leading and trailing"),
        ("ﬁne", "ﬁne"),  # no NFKC: compatibility characters stay
        ("cafe\u0301", "caf\u00e9"),  # NFC
        ("Straße", "Straße"),  # no casefold: ß is not ss
        ("line\nbreaks\r\nand\u00a0nbsp", "line breaks and nbsp"),
    ],
)
def test_normalise(raw: str, normalised: str) -> None:
    assert normalise(raw) == normalised


def test_equivalent_texts_share_a_digest_and_different_ones_do_not() -> None:
    keys = KeyBuilder(b"secret")
    assert keys.digest("What is the plan?") == keys.digest("  What is the   plan? ")
    assert keys.digest("What is the plan?") != keys.digest("What was the plan?")


def test_digest_depends_on_the_secret() -> None:
    assert KeyBuilder(b"one").digest("q") != KeyBuilder(b"two").digest("q")


def test_keys_hold_no_text_and_carry_the_workspace_hash_tag() -> None:
    keys = KeyBuilder(b"secret")
    l1 = keys.l1(WS, CLIENT, "Does the patient sleep well?")
    assert "sleep" not in l1.entry and "patient" not in l1.entry
    tag = f"{{{WS}}}"
    assert tag in l1.entry and all(tag in g for g in l1.generations)
    assert l1.generations == (keys.client_generation(WS, CLIENT), keys.workspace_epoch(WS))


def test_workspace_wide_answers_depend_on_the_workspace_generation() -> None:
    keys = KeyBuilder(b"secret")
    l1 = keys.l1(WS, None, "q")
    assert l1.generations == (keys.workspace_generation(WS), keys.workspace_epoch(WS))
    assert l1.entry != keys.l1(WS, CLIENT, "q").entry


def test_workspaces_never_share_keys() -> None:
    keys = KeyBuilder(b"secret")
    assert keys.l1(WS, CLIENT, "q").entry != keys.l1(WS2, CLIENT, "q").entry
    assert keys.l2(WS, "m", 8, "q") != keys.l2(WS2, "m", 8, "q")


def test_embedding_keys_name_model_and_dimensions_and_scope() -> None:
    keys = KeyBuilder(b"secret")
    key = keys.l2(WS, "embed-v4.0", 1024, "q")
    assert ":embed-v4.0:1024:" in key
    assert key != keys.l2(WS, "embed-v4.0", 512, "q")
    assert key != keys.l2(WS, "other-model", 1024, "q")
    assert keys.l2(None, "m", 8, "q").startswith("ai-cache:l2:e2:global:")


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        KeyBuilder(b"")


@pytest.mark.parametrize("secret", [b"s", b"k" * 32, b"x" * 64, b"long" * 40],
                         ids=["short", "32-bytes", "one-block", "over-a-block"])
def test_digest_is_hmac_sha256_of_the_normalised_text(secret: bytes) -> None:
    text = "How has the patient's  sleep changed?"
    expected = hmac.digest(secret, normalise(text).encode(), "sha256")[:16]
    assert KeyBuilder(secret).digest(text) == (
        base64.urlsafe_b64encode(expected).rstrip(b"=").decode())
