from __future__ import annotations

import json
import struct
import uuid

import numpy as np
import pytest

from app.cache.codec import (
    CachedAnswer,
    CorruptValue,
    Envelope,
    OutdatedValue,
    SourceRef,
    answer_fragment,
    decode_answer,
    decode_embedding,
    encode_answer,
    encode_embedding,
)


def unit_vectors(count: int, dims: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((count, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize(("dtype", "min_cosine", "size"), [("float16", 0.9999, 2052),
                                                           ("float32", 0.999999, 4100)])
def test_embedding_round_trip(dtype: str, min_cosine: float, size: int) -> None:
    for vector in unit_vectors(50, 1024):
        data = encode_embedding(vector, dtype)
        assert len(data) == size
        back = decode_embedding(data, 1024)
        assert back.dtype == np.float32
        cosine = float(back @ vector / (np.linalg.norm(back) * np.linalg.norm(vector)))
        assert cosine >= min_cosine


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:3],
        lambda b: b[:-2],
        lambda b: b"\x09" + b[1:],  # unknown version
        lambda b: b[:1] + b"\x07" + b[2:],  # unknown dtype
        lambda b: b + b"\x00\x00",
    ],
    ids=["truncated-header", "truncated-body", "version", "dtype", "trailing-bytes"],
)
def test_corrupt_embeddings_are_rejected(mangle: object) -> None:
    data = encode_embedding(unit_vectors(1, 16)[0])
    with pytest.raises(CorruptValue):
        decode_embedding(mangle(data), 16)  # type: ignore[operator]


def test_embedding_of_other_dimensions_is_rejected() -> None:
    with pytest.raises(CorruptValue):
        decode_embedding(encode_embedding(unit_vectors(1, 16)[0]), 32)


def test_non_finite_embedding_is_rejected() -> None:
    vector = unit_vectors(1, 8)[0]
    vector[3] = np.inf
    with pytest.raises(CorruptValue):
        decode_embedding(encode_embedding(vector, "float32"), 8)


def test_answer_round_trip_keeps_sources_and_versions() -> None:
    answer = CachedAnswer(
        "Sleep improved — 7 h.",
        (SourceRef(uuid.uuid4(), 3, 0.91), SourceRef(uuid.uuid4(), 1, 0.5)),
    )
    back = decode_answer(encode_answer(answer))
    assert [(s.session_id, s.version) for s in back.sources] == [
        (s.session_id, s.version) for s in answer.sources
    ]
    assert back.fingerprint() == answer.fingerprint()
    # The stored body fragment is the response's answer and sources, rendered once.
    body = json.loads(b"{" + back.body_fragment + b"}")
    assert body == {"answer": answer.answer,
                    "sources": [{"session_id": str(s.session_id), "score": s.score}
                                for s in answer.sources]}


def test_answer_of_the_first_format_reads_as_outdated_not_corrupt() -> None:
    source = SourceRef(uuid.uuid4(), 3, 0.91)
    first_format = (struct.pack("<BH", 1, 1) + struct.pack("<16sIf", source.session_id.bytes,
                                                           3, 0.91) + b"Sleep improved.")
    with pytest.raises(OutdatedValue):
        decode_answer(first_format)


def test_answer_whose_fragment_is_cut_is_corrupt() -> None:
    data = encode_answer(CachedAnswer("Sleep improved.", (SourceRef(uuid.uuid4(), 1, 0.5),)))
    with pytest.raises(CorruptValue):
        decode_answer(data[:-3])


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x05\x00", b"\x02\x00\x00",
                                  b"\x01\x00\x00\xff\xfe"])
def test_corrupt_answers_are_rejected(data: bytes) -> None:
    with pytest.raises(CorruptValue):
        decode_answer(data)


def test_plain_envelope_round_trip() -> None:
    envelope = Envelope()
    assert envelope.open(envelope.seal(b"payload", "k"), "k") == b"payload"


def test_encrypted_envelope_binds_the_redis_key() -> None:
    envelope = Envelope(b"k" * 32, "k1")
    sealed = envelope.seal(b"payload", "ai-cache:l1:{ws-a}:x")
    assert b"payload" not in sealed
    assert envelope.open(sealed, "ai-cache:l1:{ws-a}:x") == b"payload"
    with pytest.raises(CorruptValue):
        envelope.open(sealed, "ai-cache:l1:{ws-b}:x")  # copied under another workspace's key


def test_encrypted_envelope_refuses_other_keys_plaintext_and_tampering() -> None:
    sealed = Envelope(b"k" * 32, "k1").seal(b"payload", "key")
    with pytest.raises(CorruptValue):
        Envelope(b"x" * 32, "k1").open(sealed, "key")
    with pytest.raises(CorruptValue):
        Envelope(b"k" * 32, "k2").open(sealed, "key")
    with pytest.raises(CorruptValue):
        Envelope(b"k" * 32, "k1").open(Envelope().seal(b"payload", "key"), "key")
    with pytest.raises(CorruptValue):
        Envelope().open(sealed, "key")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(CorruptValue):
        Envelope(b"k" * 32, "k1").open(tampered, "key")


def test_bad_key_length_is_refused() -> None:
    with pytest.raises(ValueError, match="16, 24 or 32"):
        Envelope(b"short")


def _answer(*sources: tuple[int, int, float]) -> CachedAnswer:
    return CachedAnswer("a", tuple(SourceRef(uuid.UUID(int=i), v, s) for i, v, s in sources))


@pytest.mark.parametrize(
    ("cached", "fresh", "same"),
    [
        (_answer((1, 1, 0.9), (2, 1, 0.5)), _answer((2, 1, 0.5), (1, 1, 0.9)), True),
        (_answer((1, 1, 0.9), (2, 1, 0.5)), _answer((1, 2, 0.9), (2, 1, 0.5)), False),
        (_answer((1, 1, 0.9), (2, 1, 0.5)), _answer((1, 1, 0.9), (3, 1, 0.5004)), True),
        (_answer((1, 1, 0.9), (2, 1, 0.5)), _answer((3, 1, 0.9), (2, 1, 0.5)), False),
        (_answer((1, 1, 0.9), (2, 1, 0.5)), _answer((1, 1, 0.9), (3, 1, 0.52)), False),
        (_answer((1, 1, 0.9), (2, 1, 0.5)), _answer((1, 1, 0.9)), False),
        (_answer((1, 2, 0.9), (2, 1, 0.5)), _answer((1, 2, 0.9), (2, 2, 0.5)), False),
    ],
    ids=["same-set", "other-version", "tie-at-k", "differs-at-top", "gap-at-k",
         "fewer-notes", "boundary-note-updated"],
)
def test_same_sources(cached: CachedAnswer, fresh: CachedAnswer, same: bool) -> None:
    from app.service.query import same_sources

    assert same_sources(cached, fresh) is same


def test_a_fragment_rendered_by_the_caller_is_stored_as_is() -> None:
    answer = CachedAnswer("Sleep improved.", (SourceRef(uuid.uuid4(), 2, 0.75),))
    fragment = answer_fragment(answer.answer, [(s.session_id, s.score) for s in answer.sources])
    assert encode_answer(answer, fragment) == encode_answer(answer)
