"""What the invalidation outbox costs a note write, side by side in one run.

For SQLite (a file) and PostgreSQL (the local server or a private cluster), alternating
round by round on the same notes:
  * plain: the guarded UPDATE alone (`NotesRepository.update`, no intent);
  * +intent: the UPDATE and the intent's INSERT in the same transaction
    (`update_invalidating`) — the extra row the outbox costs inside the transaction;
  * +intent+remove: that, then the intent's DELETE once Redis took the bump, one by one —
    the database work the outbox adds per write. The service keeps the DELETE off the
    response path (batched in the background), so a write's response pays "+intent"; the
    bump itself is the same with or without the outbox (bench.service_bench part 2).

    .venv/bin/python -m bench.write_bench [--writes N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from app.db.outbox import OutboxRepository
from app.db.repository import NoteFields, NotesRepository, make_engine
from devstack.services import postgres as pg

EMBEDDING = bytes(1024 * 4)  # a 1024-dimension float32 embedding, as the service stores
NOTES = 20


async def _measure(url: str, writes: int) -> dict[str, list[float]]:
    engine = make_engine(url)
    notes, outbox = NotesRepository(engine), OutboxRepository(engine)
    await notes.create_schema()
    ws, client = uuid.uuid4(), uuid.uuid4()
    fields = NoteFields("Sleeps 6 hours.", "Calm.", "Improving.", "Continue.")
    ids = [(await notes.create(ws, client, fields, EMBEDDING)).id for _ in range(NOTES)]
    versions = dict.fromkeys(ids, 1)

    async def plain(note: uuid.UUID) -> None:
        await notes.update(ws, note, fields, EMBEDDING, versions[note])

    async def with_intent(note: uuid.UUID) -> None:
        await notes.update_invalidating(ws, note, fields, EMBEDDING, versions[note], "bench")

    async def with_intent_and_remove(note: uuid.UUID) -> None:
        written = await notes.update_invalidating(ws, note, fields, EMBEDDING, versions[note],
                                                  "bench")
        assert written is not None and written.intent is not None
        await outbox.remove([written.intent.id])

    variants: dict[str, Callable[[uuid.UUID], Awaitable[None]]] = {
        "plain": plain, "+intent": with_intent, "+intent+remove": with_intent_and_remove}
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for i in range(writes + 20):  # 20 warm-up rounds
            order = list(variants.items())
            order = order[i % 3:] + order[:i % 3]  # no variant always first
            for name, write in order:
                note = ids[i % NOTES]
                started = time.perf_counter()
                await write(note)
                elapsed = time.perf_counter() - started
                versions[note] += 1
                if i >= 20:
                    times[name].append(elapsed)
        await outbox.remove([i.id for i in (await outbox.snapshot(100_000)).intents])
    finally:
        await notes.aclose()
    return times


def _report(label: str, times: dict[str, list[float]]) -> None:
    base = statistics.median(times["plain"])
    print(f"{label}: {len(times['plain'])} writes per variant")
    for name, values in times.items():
        median = statistics.median(values)
        p95 = statistics.quantiles(values, n=20)[-1]
        print(f"  {name:<16} median {median * 1000:7.3f} ms   p95 {p95 * 1000:7.3f} ms   "
              f"x{median / base:.2f} of plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        _report("SQLite", asyncio.run(_measure(sqlite, args.writes)))
    service = pg.ensure_postgres(name="postgres-bench")
    name = f"aicache_write_bench_{uuid.uuid4().hex[:8]}"
    try:
        url = pg.create_database(service, name)
        _report("PostgreSQL", asyncio.run(_measure(url, args.writes)))
    finally:
        pg.drop_database(service, name)
        pg.stop(service)


if __name__ == "__main__":
    main()
