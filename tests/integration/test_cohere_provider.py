"""CohereProvider end to end: the real cohere SDK over TCP against a local Cohere v2 stub."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from app.providers.base import Provider, ProviderError, RetrievedNote
from app.providers.cohere import EMBED_BATCH_SIZE, SYSTEM_PROMPT, CohereProvider
from app.settings import Settings
from tests.support.cohere_stub import CohereStub, expected_embedding, running_cohere_stub

pytestmark = [
    pytest.mark.integration,
    # The SDK's own use of a deprecated pydantic API; nothing this project can act on.
    pytest.mark.filterwarnings("ignore:The `__fields__` attribute is deprecated"),
]

API_KEY = "test-key-123"
DIMS = 64
EMBED_MODEL = "embed-v4.0"
CHAT_MODEL = "command-a-03-2025"


class RecordingSleep:
    """Stands in for asyncio.sleep: records the backoff delays without waiting for them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture(scope="module")
def stub_server() -> Iterator[CohereStub]:
    with running_cohere_stub() as stub:
        yield stub


@pytest.fixture
def stub(stub_server: CohereStub) -> Iterator[CohereStub]:
    stub_server.reset()
    yield stub_server
    stub_server.reset()


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


ProviderFactory = Callable[..., CohereProvider]


@pytest.fixture
async def make_provider(
    stub: CohereStub, sleep: RecordingSleep
) -> AsyncIterator[ProviderFactory]:
    created: list[CohereProvider] = []

    def factory(**overrides: object) -> CohereProvider:
        kwargs: dict[str, object] = {
            "api_key": API_KEY,
            "base_url": stub.base_url,
            "embed_model": EMBED_MODEL,
            "chat_model": CHAT_MODEL,
            "dimensions": DIMS,
            "timeout_seconds": 5.0,
            "max_retries": 2,
            "sleep": sleep,
        }
        kwargs.update(overrides)
        provider = CohereProvider(**kwargs)  # type: ignore[arg-type]
        created.append(provider)
        return provider

    yield factory
    for provider in created:
        await provider.aclose()


def _note(text: str) -> RetrievedNote:
    return RetrievedNote(session_id=uuid.uuid4(), version=1, score=0.9, text=text)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- Happy paths --------------------------------------------------------------------------


async def test_provider_satisfies_the_protocol(make_provider: ProviderFactory) -> None:
    provider: Provider = make_provider()
    assert provider.name == "cohere"
    assert provider.embed_model == EMBED_MODEL
    assert provider.dimensions == DIMS


async def test_embed_returns_float32_vectors_in_order_and_sends_the_v2_request(
    stub: CohereStub, make_provider: ProviderFactory
) -> None:
    texts = ["anxiety improved", "sleep is poor", "plan: CBT weekly"]

    vectors = await make_provider().embed(texts, input_type="search_document")

    assert len(vectors) == len(texts)
    for text, vector in zip(texts, vectors, strict=True):
        assert vector.dtype == np.float32
        assert vector.shape == (DIMS,)
        np.testing.assert_array_equal(vector, expected_embedding(text, DIMS))
    [request] = stub.requests("embed")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == EMBED_MODEL
    assert request.body["input_type"] == "search_document"
    assert request.body["texts"] == texts
    assert request.body["embedding_types"] == ["float"]
    assert request.body["output_dimension"] == DIMS


async def test_embed_query_input_type_is_passed_through(
    stub: CohereStub, make_provider: ProviderFactory
) -> None:
    await make_provider().embed(["how is sleep?"], input_type="search_query")

    assert stub.requests("embed")[0].body["input_type"] == "search_query"


async def test_embed_splits_large_inputs_into_cohere_sized_batches_and_keeps_order(
    stub: CohereStub, make_provider: ProviderFactory
) -> None:
    texts = [f"note {i}" for i in range(EMBED_BATCH_SIZE * 2 + 5)]

    vectors = await make_provider().embed(texts, input_type="search_document")

    assert [len(r.body["texts"]) for r in stub.requests("embed")] == [96, 96, 5]
    np.testing.assert_array_equal(np.stack(vectors), np.stack(
        [expected_embedding(t, DIMS) for t in texts]
    ))


async def test_embed_of_nothing_makes_no_request(
    stub: CohereStub, make_provider: ProviderFactory
) -> None:
    assert await make_provider().embed([], input_type="search_query") == []
    assert stub.count("embed") == 0


async def test_generate_returns_the_text_and_grounds_the_model_in_the_notes(
    stub: CohereStub, make_provider: ProviderFactory
) -> None:
    stub.set_chat_reply("Sleep improved after week 3.")
    notes = [_note("S: sleeps 7h. A: improved."), _note("S: sleeps 4h. A: insomnia.")]

    answer = await make_provider().generate("How is the client's sleep?", notes)

    assert answer == "Sleep improved after week 3."
    [request] = stub.requests("chat")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == CHAT_MODEL
    assert request.body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "How is the client's sleep?"},
    ]
    assert request.body["documents"] == [
        {"id": str(n.session_id), "data": {"text": n.text}} for n in notes
    ]


async def test_generate_without_notes_sends_no_documents(
    stub: CohereStub, make_provider: ProviderFactory
) -> None:
    await make_provider().generate("Anything about sleep?", [])

    assert "documents" not in stub.requests("chat")[0].body


async def test_from_settings_uses_the_configured_endpoint_key_and_models(
    stub: CohereStub,
) -> None:
    settings = Settings(
        cohere_api_key=SecretStr("settings-key"),
        cohere_base_url=stub.base_url,
        cohere_embed_model="embed-test",
        cohere_chat_model="chat-test",
        cohere_embedding_dimensions=32,
        cohere_timeout_seconds=3.0,
        cohere_max_retries=1,
    )
    provider = CohereProvider.from_settings(settings)
    try:
        [vector] = await provider.embed(["x"], input_type="search_query")
        await provider.generate("q", [_note("n")])
    finally:
        await provider.aclose()

    assert vector.shape == (32,)
    embed, chat = stub.requests("embed")[0], stub.requests("chat")[0]
    assert embed.headers["authorization"] == "Bearer settings-key"
    assert embed.body["model"] == "embed-test"
    assert chat.body["model"] == "chat-test"


def test_an_empty_api_key_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="API key"):
        CohereProvider(api_key="", base_url="http://127.0.0.1:1", embed_model="e",
                       chat_model="c", dimensions=8, timeout_seconds=1, max_retries=0)


# --- Temporary failures: retried by our loop, not by the SDK --------------------------------


async def test_429_with_retry_after_is_retried_then_succeeds(
    stub: CohereStub, make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    stub.fail("embed", 429, times=2, retry_after="2", message="rate limited")

    vectors = await make_provider(max_retries=2).embed(["a"], input_type="search_query")

    assert len(vectors) == 1
    assert stub.count("embed") == 3
    assert sleep.delays == [2.0, 2.0]  # the server's Retry-After, not our own backoff


async def test_retry_after_is_capped(
    stub: CohereStub, make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    stub.fail("chat", 429, times=1, retry_after="3600")

    await make_provider(retry_after_cap_seconds=1.5).generate("q", [_note("n")])

    assert stub.count("chat") == 2
    assert sleep.delays == [1.5]


async def test_503_forever_gives_a_temporary_error_after_max_retries_plus_one_attempts(
    stub: CohereStub, make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    stub.fail("chat", 503, message="overloaded")
    provider = make_provider(max_retries=3, backoff_base_seconds=0.1, backoff_max_seconds=0.3)

    with pytest.raises(ProviderError) as caught:
        await provider.generate("q", [_note("n")])

    assert caught.value.temporary is True
    assert stub.count("chat") == 4
    assert len(sleep.delays) == 3
    assert all(0 < d <= 0.3 for d in sleep.delays)  # bounded exponential backoff with jitter


async def test_zero_retries_means_exactly_one_attempt(
    stub: CohereStub, make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    stub.fail("embed", 500)

    with pytest.raises(ProviderError) as caught:
        await make_provider(max_retries=0).embed(["a"], input_type="search_query")

    assert caught.value.temporary is True
    assert stub.count("embed") == 1
    assert sleep.delays == []


async def test_a_slow_answer_times_out_quickly_as_a_temporary_error(
    stub: CohereStub, make_provider: ProviderFactory
) -> None:
    stub.delay("embed", 120)
    provider = make_provider(timeout_seconds=0.3, max_retries=1)
    started = time.monotonic()

    with pytest.raises(ProviderError) as caught:
        await provider.embed(["a"], input_type="search_query")

    assert caught.value.temporary is True
    assert "timeout" in str(caught.value)
    assert stub.count("embed") == 2
    # Generous: only proves neither the SDK's 300 s default nor the stub's 120 s applied.
    assert time.monotonic() - started < 30


async def test_a_refused_connection_is_temporary_and_retried(
    make_provider: ProviderFactory, sleep: RecordingSleep
) -> None:
    provider = make_provider(base_url=f"http://127.0.0.1:{_closed_port()}", max_retries=2)

    with pytest.raises(ProviderError) as caught:
        await provider.embed(["a"], input_type="search_query")

    assert caught.value.temporary is True
    assert len(sleep.delays) == 2


# --- Permanent failures: not retried, server message kept -----------------------------------


@pytest.mark.parametrize(
    ("endpoint", "status", "message"),
    [
        ("chat", 401, "invalid api token"),
        ("embed", 401, "invalid api token"),
        ("embed", 400, "invalid request: output_dimension not supported for this model"),
    ],
)
async def test_client_errors_are_permanent_carry_the_message_and_are_not_retried(
    stub: CohereStub,
    make_provider: ProviderFactory,
    *,
    sleep: RecordingSleep,
    endpoint: str,
    status: int,
    message: str,
) -> None:
    stub.fail("embed" if endpoint == "embed" else "chat", status, message=message)
    provider = make_provider(max_retries=3)

    with pytest.raises(ProviderError) as caught:
        if endpoint == "embed":
            await provider.embed(["a"], input_type="search_query")
        else:
            await provider.generate("q", [_note("n")])

    assert caught.value.temporary is False
    assert message in str(caught.value)
    assert str(status) in str(caught.value)
    assert stub.count("embed" if endpoint == "embed" else "chat") == 1
    assert sleep.delays == []


async def test_a_wrong_key_is_rejected_by_the_server_as_permanent() -> None:
    with running_cohere_stub(expected_api_key="the-right-key") as strict:
        provider = CohereProvider(api_key="the-wrong-key", base_url=strict.base_url,
                                  embed_model=EMBED_MODEL, chat_model=CHAT_MODEL,
                                  dimensions=DIMS, timeout_seconds=5, max_retries=2)
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.embed(["a"], input_type="search_query")
        finally:
            await provider.aclose()
        assert strict.count("embed") == 1
    assert caught.value.temporary is False
    assert "invalid api token" in str(caught.value)


@pytest.mark.parametrize(("dimensions", "drop"), [(DIMS - 1, 0), (DIMS + 1, 0), (None, 1)])
async def test_a_wrongly_shaped_embedding_response_is_an_error(
    stub: CohereStub, make_provider: ProviderFactory, dimensions: int | None, drop: int
) -> None:
    stub.corrupt_embeddings(dimensions=dimensions, drop=drop)

    with pytest.raises(ProviderError) as caught:
        await make_provider().embed(["a", "b"], input_type="search_document")

    assert caught.value.temporary is False
    assert stub.count("embed") == 1


# --- Resource ownership -------------------------------------------------------------------


async def test_aclose_leaves_an_injected_http_client_open(stub: CohereStub) -> None:
    async with httpx.AsyncClient() as http:
        provider = CohereProvider(api_key=API_KEY, base_url=stub.base_url,
                                  embed_model=EMBED_MODEL, chat_model=CHAT_MODEL,
                                  dimensions=DIMS, timeout_seconds=5, max_retries=0,
                                  httpx_client=http)
        await provider.aclose()
        assert not http.is_closed
