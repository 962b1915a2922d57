"""Questions that differ in meaning never share a cache entry, and no input alone can make
a cached value disagree with a fresh one (a verification mismatch) in dark launch."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from app.providers.base import EmbedInput, RetrievedNote, Vector
from app.providers.local import LocalProvider
from tests.integration.test_query_api import add_note, ask
from tests.support.service import metric_value, set_flags

WS = uuid.UUID("00000000-0000-4000-8000-0000000000e1")
CLIENT = uuid.UUID("00000000-0000-4000-8000-0000000000e2")

# Spelled differently, the same question (NFD accents, spacing): must share an entry.
SAME = [
    ("Has the café visit helped her anxiety?", "Has the cafe\u0301 visit  helped her anxiety?"),
    ("Is the naïve plan working?", "  Is the nai\u0308ve\tplan working?\n"),
]
# Different questions that NFKC + casefold used to merge.
DIFFERENT = [
    ("How is her anxiety² now?", "How is her anxiety2 now?"),
    ("Any SAD symptoms?", "Any sad symptoms?"),
    ("Is the ½ tablet enough?", "Is the 1/2 tablet enough?"),
]


class RecordingProvider(LocalProvider):
    """The local provider, remembering the questions it was given."""

    def __init__(self) -> None:
        super().__init__(dimensions=256, latency_scale=0.0)
        self.questions: list[str] = []

    async def embed(self, texts: Sequence[str], *, input_type: EmbedInput) -> list[Vector]:
        if input_type == "search_query":
            self.questions.extend(texts)
        return await super().embed(texts, input_type=input_type)

    async def generate(self, question: str, notes: Sequence[RetrievedNote]) -> str:
        self.questions.append(question)
        return await super().generate(question, notes)


def verifications(app: Any, layer: str, result: str) -> float:
    return metric_value(app, "ai_agent_cache_verifications_total", cache_layer=layer,
                        result=result)


async def test_dark_launch_sees_no_mismatch_from_spelling_alone(service: Any,
                                                                 redis: Redis) -> None:
    """The local provider reads `café` and `cafe\u0301` differently (it splits on the
    combining accent), so it only agrees because it is handed the canonical form."""
    await set_flags(redis, shadow=True)
    provider = RecordingProvider()
    async with service(provider=provider) as (client, app):
        await add_note(client, WS, CLIENT, "Anxiety lower after the café visit; naïve plan.")
        for first, second in SAME + DIFFERENT:
            await ask(client, WS, CLIENT, first)
            again = await ask(client, WS, CLIENT, second)
            expected = "shadow-hit" if (first, second) in SAME else "shadow-miss"
            assert again.json()["cache"] == {"l1": expected, "l2": expected}, (first, second)
        for layer in ("embedding", "query_result"):
            assert verifications(app, layer, "match") == len(SAME)
            assert verifications(app, layer, "mismatch") == 0
    assert provider.questions[:2] == [SAME[0][0]] * 2  # embedded, then generated
    assert provider.questions[2:4] == [SAME[0][0]] * 2  # the NFD spelling, canonical


async def test_l1_serves_the_same_question_and_never_a_different_one(service: Any,
                                                                     redis: Redis) -> None:
    await set_flags(redis, l2=True, l1_percent=100)
    async with service() as (client, _):
        await add_note(client, WS, CLIENT, "Anxiety lower after the café visit; naïve plan.")
        for first, second in SAME + DIFFERENT:
            answer = (await ask(client, WS, CLIENT, first)).json()
            again = (await ask(client, WS, CLIENT, second)).json()
            if (first, second) in SAME:
                assert again["cache"]["l1"] == "hit" and again["answer"] == answer["answer"]
            else:
                assert again["cache"] == {"l1": "miss", "l2": "miss"}, (first, second)
    keys = [k async for k in redis.scan_iter("ai-cache:l1:*")]
    assert keys and all(k.startswith(b"ai-cache:l1:a2:") for k in keys)
    assert len(keys) == len(SAME) + 2 * len(DIFFERENT)
