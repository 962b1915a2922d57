"""The fence's rules (app/service/outbox.py PendingView), with explicit clock readings."""

from __future__ import annotations

import random
import uuid

import pytest
from pydantic import ValidationError

from app.db.outbox import Intent, OutboxSnapshot
from app.service.outbox import ACK_WAIT_LEASES, PendingView
from app.settings import Settings

LEASE = 1.0
WS, OTHER = uuid.uuid4(), uuid.uuid4()


def intent(ws: uuid.UUID = WS) -> Intent:
    return Intent(uuid.uuid4(), ws, uuid.uuid4(), "session_update")


def snapshot(*intents: Intent) -> OutboxSnapshot:
    return OutboxSnapshot(tuple(intents), frozenset(i.workspace_id for i in intents),
                          len(intents))


def test_nothing_is_served_before_the_first_successful_read() -> None:
    view = PendingView(LEASE)
    assert not view.allows(WS, 0.0)
    view.unreachable(0.0)  # a refused read teaches nothing
    assert not view.allows(WS, 0.1)
    view.read(0.2, snapshot())
    assert view.allows(WS, 0.3)


def test_a_read_older_than_the_lease_stops_l1_everywhere() -> None:
    view = PendingView(LEASE)
    view.read(10.0, snapshot())
    assert view.allows(WS, 10.0 + LEASE)
    assert not view.allows(WS, 10.0 + LEASE + 0.001)
    assert not view.fresh(10.0 + LEASE + 0.001)


def test_the_lease_counts_from_when_the_read_started_not_when_it_answered() -> None:
    view = PendingView(LEASE)
    view.read(started_at=5.0, snapshot=snapshot())  # answered late, at 5.9
    assert not view.allows(WS, 6.01)


def test_a_pending_workspace_is_fenced_and_the_others_are_not() -> None:
    view = PendingView(LEASE)
    view.read(0.0, snapshot(intent(WS)))
    assert not view.allows(WS, 0.5) and view.allows(OTHER, 0.5) and view.pending
    view.read(0.2, snapshot())
    assert view.allows(WS, 0.5) and not view.pending


def test_a_writers_own_intent_is_fenced_at_once_and_until_a_later_read_proves_it_gone() -> None:
    view = PendingView(LEASE)
    view.read(0.0, snapshot())
    mine = intent(WS)
    view.add_local(mine, now=0.30)
    assert not view.allows(WS, 0.31)
    # A read that started before the intent was added cannot vouch for it.
    view.read(0.25, snapshot())
    assert not view.allows(WS, 0.40)
    view.read(0.45, snapshot(mine))
    assert not view.allows(WS, 0.50)
    view.read(0.65, snapshot())  # applied and removed (by any replica)
    assert view.allows(WS, 0.70)


def test_a_refused_read_keeps_the_last_known_set_and_the_lease() -> None:
    view = PendingView(LEASE)
    view.read(0.0, snapshot(intent(WS)))
    view.unreachable(0.8)  # the database refuses connections: no write can commit either
    assert view.allows(OTHER, 1.7) and not view.allows(WS, 1.7)
    assert not view.allows(OTHER, 1.81)  # no read attempt since: stale


def test_the_relay_takes_intents_seen_twice_or_its_own() -> None:
    view = PendingView(LEASE)
    theirs, mine, newest = intent(WS), intent(OTHER), intent(WS)
    view.add_local(mine, now=0.0)
    view.read(0.1, snapshot(theirs, mine))
    assert view.due == (mine,)  # another writer may still be applying `theirs`
    view.read(0.3, snapshot(theirs, mine, newest))
    assert set(view.due) == {theirs, mine}
    view.applied([theirs.id], now=0.35)
    assert view.due == (mine,)
    assert not view.allows(WS, 0.4)  # `newest` is pending there too
    view.applied([newest.id], now=0.36)
    assert view.allows(WS, 0.4)  # applied here: its row no longer fences
    view.read(0.3, snapshot(theirs, mine, newest))  # a read from before: still ignored
    assert view.allows(WS, 0.4) and not view.allows(OTHER, 0.4)


def test_an_applied_intent_is_forgotten_once_a_later_read_no_longer_lists_it() -> None:
    view = PendingView(LEASE)
    done = intent(WS)
    view.applied([done.id], now=0.1)
    view.read(0.2, snapshot())
    view.read(0.4, snapshot(done))  # listed again (its removal failed): fenced again
    assert not view.allows(WS, 0.5)


def test_no_replica_serves_l1_after_the_acknowledgement_from_a_read_before_the_commit() -> None:
    """The guarantee, over random read schedules: the intent commits at c, the writer
    acknowledges at c + ACK_WAIT_LEASES x lease; a replica whose reads follow any schedule
    never allows the workspace at or after the acknowledgement without having read it."""
    rng = random.Random(11)
    for _ in range(2000):
        view = PendingView(LEASE)
        commit = rng.uniform(1.0, 5.0)
        acknowledged = commit + ACK_WAIT_LEASES * LEASE
        pending = intent(WS)
        now, applied_at = 0.0, acknowledged + rng.uniform(0.0, 3.0)
        while now < acknowledged + 3.0:
            took = rng.choice([0.001, 0.01, 0.2, 0.7, 1.5])  # some reads are slow
            if rng.random() < 0.2:
                # A failed read: timed out (teaches nothing), or refused before the commit
                # (after it, a refused read while the writer commits is the double
                # partition the guarantee excludes).
                if rng.random() < 0.5 and now < commit:
                    view.unreachable(now)
            elif commit <= now < applied_at:
                view.read(now, snapshot(pending))
            else:
                view.read(now, snapshot())
            answered = now + took
            for probe in (answered, answered + rng.uniform(0.0, 1.5)):
                if acknowledged <= probe < applied_at:
                    assert not view.allows(WS, probe), (commit, now, probe)
            now = answered + rng.uniform(0.0, 0.5)


def test_the_poll_interval_must_fit_twice_in_the_lease() -> None:
    with pytest.raises(ValidationError, match="OUTBOX_POLL_SECONDS"):
        Settings(_env_file=None, outbox_poll_seconds=0.6,  # type: ignore[call-arg]
                 outbox_lease_seconds=1.0)
