"""Durable invalidation: the outbox, its relay to Redis, and the fence on L1.

A note write and its invalidation intent commit in one database transaction
(app/db/outbox.py). Right after the commit the writer bumps the generations in Redis and
deletes the intent. If Redis cannot take the bump, the intent stays in the database — it
survives a crash of the writer — and every replica's relay retries it (backoff doubling from
the poll interval to OUTBOX_RETRY_MAX_SECONDS) until one succeeds and removes it.

The fence. Every replica reads the outbox every OUTBOX_POLL_SECONDS (P) and keeps, in
memory, the set of workspaces with a pending intent; an L1 answer is served only if the
workspace is not in that set *and* the last read of the outbox started less than
OUTBOX_LEASE_SECONDS (L) ago. A writer whose bump failed waits 1.1 L before it acknowledges
the write. Why that gives no stale answer after an acknowledged write: let the intent
commit at c and the write be acknowledged at a >= c + 1.1 L. A replica serving an L1 answer
at t >= a relies on a read that started at s >= t - L > c, so that read began after the
commit and found the intent — or found it gone, which only happens after the generations
were bumped, when the old entries are misses anyway. The 10 % covers clock-rate
differences between machines. On the hit path this costs one clock read and, only while
something is pending, one set lookup.

A read that fails because the database refuses connections keeps the last known set and
extends the lease (the database being down must not stop L1: no write can commit then); a
read that times out (half a lease) does not, so a replica whose view is merely slow stops
serving L1 rather than risk a stale answer. Before the first successful read — at start,
e.g. after a crash — a replica serves no L1 at all. The one case left open is a double
partition (README, Reliability): a replica that cannot reach the database while another
writes to it and cannot reach Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

from app import contract as c
from app.cache.store import CacheUnavailable
from app.db.errors import DatabaseError
from app.db.outbox import Intent, OutboxRepository, OutboxSnapshot
from app.metrics import ServiceMetrics
from app.service.invalidation import Invalidator

log = logging.getLogger(__name__)

# Intents applied per relay attempt, and read per poll: a bounded batch however long Redis
# was away (the set of pending workspaces is always read in full).
BATCH = 500
# The writer's wait before acknowledging, in leases: the margin covers clock-rate
# differences between replicas' monotonic clocks (ppm in practice).
ACK_WAIT_LEASES = 1.1


class PendingView:
    """What this replica knows of the outbox, and whether that lets it serve L1. Pure: the
    caller passes the clock readings, so the rules are tested without I/O."""

    def __init__(self, lease_seconds: float) -> None:
        self._lease = lease_seconds
        self._fresh_until = -math.inf  # nothing known before the first successful read
        self._known = False
        self._snapshot = OutboxSnapshot((), frozenset(), 0)
        # This replica's own intents whose bump failed: {intent id: (workspace, when)}. They
        # are blocked at once, before any read has seen them.
        self._local: dict[uuid.UUID, tuple[uuid.UUID, float]] = {}
        self._blocked: frozenset[uuid.UUID] = frozenset()
        self._previous_ids: frozenset[uuid.UUID] = frozenset()
        self._due: tuple[Intent, ...] = ()
        # Intents this replica has applied to Redis whose rows may still be listed (their
        # removal is batched): {intent id: when applied}. Safe to ignore — the generations
        # are bumped — so a writer does not fence its own workspace after every write.
        self._applied: dict[uuid.UUID, float] = {}

    def allows(self, workspace_id: uuid.UUID, now: float) -> bool:
        """Whether an L1 answer of this workspace may be served now (the hot path)."""
        if now > self._fresh_until:
            return False
        blocked = self._blocked
        return not blocked or workspace_id not in blocked

    def fresh(self, now: float) -> bool:
        return now <= self._fresh_until

    @property
    def pending(self) -> bool:
        return bool(self._blocked)

    @property
    def due(self) -> tuple[Intent, ...]:
        """Intents for the relay: this replica's own that its write could not apply, and
        any seen by two reads in a row. A writer applies its own intent within milliseconds
        of its commit; waiting one interval leaves it the chance, so an intent is rarely
        applied twice (which would be harmless: one more miss)."""
        return self._due

    def read(self, started_at: float, snapshot: OutboxSnapshot) -> None:
        """A read of the outbox that started at `started_at` answered `snapshot`."""
        self._known = True
        self._fresh_until = max(self._fresh_until, started_at + self._lease)
        self._snapshot = snapshot
        ids = frozenset(i.id for i in snapshot.intents)
        # A local intent added before this read started is in it, or was applied and
        # removed since; one added later may not be in it yet. The same for applied ones.
        self._local = {k: v for k, v in self._local.items() if k in ids or v[1] >= started_at}
        self._applied = {k: t for k, t in self._applied.items() if k in ids or t >= started_at}
        self._due = tuple(i for i in snapshot.intents if i.id not in self._applied
                          and (i.id in self._previous_ids or i.id in self._local))
        self._previous_ids = ids
        self._recompute()

    def unreachable(self, started_at: float) -> None:
        """The database refused the read: keep serving on the last known set (if any)."""
        if self._known:
            self._fresh_until = max(self._fresh_until, started_at + self._lease)

    def add_local(self, intent: Intent, now: float) -> None:
        self._local[intent.id] = (intent.workspace_id, now)
        self._recompute()

    def applied(self, ids: Iterable[uuid.UUID], now: float) -> None:
        """Intents this replica bumped in Redis: no longer due, and their rows no longer
        fence their workspaces here (other intents there still do)."""
        done = frozenset(ids)
        self._applied.update(dict.fromkeys(done, now))
        self._local = {k: v for k, v in self._local.items() if k not in done}
        self._due = tuple(i for i in self._due if i.id not in done)
        self._previous_ids -= done
        self._recompute()

    def _recompute(self) -> None:
        snapshot = self._snapshot
        if len(snapshot.intents) == snapshot.total:  # complete: each intent is known
            read = {i.workspace_id for i in snapshot.intents if i.id not in self._applied}
        else:  # cut at the batch size: every listed workspace, to be safe
            read = set(snapshot.workspaces)
        self._blocked = frozenset(read | {ws for ws, _ in self._local.values()})


class InvalidationOutbox:
    """Applies intents after their commit, relays the ones left pending, fences L1."""

    def __init__(
        self,
        outbox: OutboxRepository,
        invalidator: Invalidator,
        metrics: ServiceMetrics,
        *,
        poll_seconds: float,
        lease_seconds: float,
        retry_max_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox
        self._invalidator = invalidator
        self._metrics = metrics
        self._poll_seconds = poll_seconds
        self._read_timeout = lease_seconds / 2
        self.ack_wait_seconds = lease_seconds * ACK_WAIT_LEASES
        self._retry_max = retry_max_seconds
        self._clock = clock
        self.view = PendingView(lease_seconds)
        self._relay_due = asyncio.Event()
        self._redis_back = asyncio.Event()
        self._removals: list[uuid.UUID] = []  # applied by their writer, to delete
        self._removal_due = asyncio.Event()
        self._read_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_read_failed = False

    # --- the hot path --------------------------------------------------------------------

    def allows(self, workspace_id: uuid.UUID) -> bool:
        """Whether this replica may serve an L1 answer of this workspace now."""
        now = self._clock()
        if self.view.allows(workspace_id, now):
            return True
        if not self.view.fresh(now):
            self._read_now.set()  # e.g. after the loop was frozen: read again at once
        return False

    @property
    def pending(self) -> bool:
        return self.view.pending

    async def write_in_flight(self, workspace_id: uuid.UUID) -> bool:
        """Whether a write to this workspace has committed and its invalidation may not be
        applied yet (asked of the database, not of this replica's view: the window is
        milliseconds). Unknown (database unreachable) counts as in flight."""
        try:
            return await self._outbox.pending_for(workspace_id)
        except DatabaseError:
            return True

    # --- writes --------------------------------------------------------------------------

    async def after_commit(self, intent: Intent) -> bool:
        """Apply an intent its write just committed. If Redis cannot take it, block its
        workspace here at once and wait until every replica's view holds it (module doc)
        before the caller acknowledges the write. Returns whether it was applied."""
        self._metrics.cache_invalidations.labels(workspace_id=str(intent.workspace_id),
                                                 reason=intent.reason).inc()
        try:
            await self._invalidator.apply(intent.workspace_id, intent.client_id)
        except CacheUnavailable:
            self.view.add_local(intent, self._clock())
            log.error("invalidation could not reach Redis; kept in the outbox and retried, "
                      "no replica serves L1 for the workspace meanwhile",
                      extra={"workspace": str(intent.workspace_id), "intent": str(intent.id)})
            await asyncio.sleep(self.ack_wait_seconds)
            return False
        # Removing the row is off the response path (a second commit, as costly as the
        # write's own on SQLite): batched by a background task. Until it is gone, other
        # replicas may fence the workspace for up to one more read — never less safe.
        self.view.applied([intent.id], self._clock())
        self._removals.append(intent.id)
        self._removal_due.set()
        return True

    async def invalidate(
        self, workspace_id: uuid.UUID, client_id: uuid.UUID | None, reason: str
    ) -> bool:
        """An operator's invalidation: recorded durably, then applied like a write's."""
        return await self.after_commit(await self._outbox.record(workspace_id, client_id,
                                                                 reason))

    # --- background ----------------------------------------------------------------------

    async def start(self) -> None:
        """Read the outbox once before serving (a restarted replica learns what is still
        pending before its first L1 answer), then keep reading and relaying."""
        await self.read_once()
        self._tasks = [asyncio.create_task(self._read_forever(), name="outbox-read"),
                       asyncio.create_task(self._relay_forever(), name="outbox-relay"),
                       asyncio.create_task(self._remove_forever(), name="outbox-remove")]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        # Rows applied but not yet removed: one last try (if it fails they are applied once
        # more after the next start — one more miss, nothing stale).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._read_timeout):
                await self._remove_queued()

    async def read_once(self) -> None:
        started = self._clock()
        try:
            async with asyncio.timeout(self._read_timeout):
                snapshot = await self._outbox.snapshot(BATCH)
        except TimeoutError:  # before OSError: TimeoutError is one
            self._read_failed(c.OUTCOME_TIMEOUT, "did not answer in time")
        except (DatabaseError, OSError) as exc:
            self.view.unreachable(started)
            self._read_failed(c.OUTCOME_ERROR, type(exc).__name__)
        else:
            self.view.read(started, snapshot)
            self._metrics.invalidation_reads.labels(outcome=c.OUTCOME_OK).inc()
            self._metrics.invalidation_pending.set(snapshot.total)
            if self._last_read_failed:
                log.info("outbox readable again")
                self._last_read_failed = False
            if self.view.due:
                self._relay_due.set()
        self._metrics.invalidation_view_stale.set(0 if self.view.fresh(self._clock()) else 1)

    def _read_failed(self, outcome: str, why: str) -> None:
        self._metrics.invalidation_reads.labels(outcome=outcome).inc()
        if not self._last_read_failed:  # once per outage, not every interval
            log.warning("outbox read failed (%s); L1 %s", why,
                        "keeps the last known pending set" if outcome == c.OUTCOME_ERROR
                        else "stops once the last read is a lease old")
            self._last_read_failed = True

    async def _read_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._read_now.wait(), self._poll_seconds)
            self._read_now.clear()
            try:
                await self.read_once()
            except Exception:  # the fence must keep being read whatever one read does
                log.exception("outbox read crashed")

    async def _relay_forever(self) -> None:
        backoff = self._poll_seconds
        while True:
            await self._relay_due.wait()
            self._relay_due.clear()
            try:
                applied = await self.relay_once()
            except Exception:
                log.exception("outbox relay crashed")
                applied = False
            if applied:
                backoff = self._poll_seconds
                self._read_now.set()  # unblock the workspaces as soon as a read confirms
                continue
            self._redis_back.clear()
            try:
                await asyncio.wait_for(self._redis_back.wait(), backoff)
            except TimeoutError:
                backoff = min(backoff * 2, self._retry_max)
            else:  # Redis answered someone again: retry now, from the shortest backoff
                backoff = self._poll_seconds
                self._relay_due.set()

    def redis_recovered(self) -> None:
        """Redis answers again (the circuit breaker closed): retry without waiting out the
        backoff, so the fenced workspaces get L1 back promptly."""
        self._redis_back.set()

    async def relay_once(self) -> bool:
        """Apply the due intents, one workspace (one MULTI) at a time; stop at the first
        that Redis refuses. Returns whether all of them were applied."""
        due = self.view.due
        if not due:
            return True
        done: list[Intent] = []
        failed = False
        for workspace_intents in _by_workspace(due):
            try:
                await self._apply_together(workspace_intents)
            except CacheUnavailable:
                failed = True
                break
            done.extend(workspace_intents)
        self._metrics.invalidation_retries.labels(
            outcome=c.OUTCOME_ERROR if failed else c.OUTCOME_OK).inc()
        await self._remove(done, c.APPLIED_VIA_RELAY)
        if done:
            log.info("pending invalidations applied", extra={"intents": len(done)})
        return not failed

    async def _apply_together(self, intents: Sequence[Intent]) -> None:
        keys: dict[str, None] = {}
        for intent in intents:
            keys.update(dict.fromkeys(
                self._invalidator.generation_keys(intent.workspace_id, intent.client_id)))
        await self._invalidator.bump_keys(list(keys))

    async def _remove_forever(self) -> None:
        while True:
            await self._removal_due.wait()
            self._removal_due.clear()
            try:
                await self._remove_queued()
            except Exception:
                log.exception("outbox removal crashed")

    async def _remove_queued(self) -> None:
        ids, self._removals = self._removals, []
        if ids:
            await self._remove_ids(ids, c.APPLIED_VIA_WRITE)

    async def _remove(self, intents: Sequence[Intent], via: str) -> None:
        self.view.applied((i.id for i in intents), self._clock())
        await self._remove_ids([i.id for i in intents], via)

    async def _remove_ids(self, ids: list[uuid.UUID], via: str) -> None:
        if not ids:
            return
        try:
            await self._outbox.remove(ids)
        except (DatabaseError, OSError) as exc:
            # Applied but still listed: a relay applies them once more later (one more miss
            # for their answers), and until then their workspaces stay fenced.
            log.warning("applied invalidations could not be removed from the outbox (%s)",
                        type(exc).__name__)
            return
        self._metrics.invalidation_applied.labels(via=via).inc(len(ids))


def _by_workspace(intents: Iterable[Intent]) -> list[list[Intent]]:
    groups: dict[uuid.UUID, list[Intent]] = {}
    for intent in intents:
        groups.setdefault(intent.workspace_id, []).append(intent)
    return list(groups.values())
