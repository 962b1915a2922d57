"""The client bench's pure parts: rounds and spreads, RESP packing, the peer venv's stamp,
the seeded entry's size and the reply comparison (bench/client_bench)."""

from __future__ import annotations

from pathlib import Path

import hiredis
import pytest

from app.cache.codec import Envelope, encode_answer
from bench.client_bench import peer_venv, resp
from bench.client_bench.fixture import answer_of_size, same_reply
from bench.client_bench.stats import ratios, rotate, split_calls, spread


def test_spread_is_median_and_range() -> None:
    s = spread([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.low, s.high) == (2.5, 1.0, 10.0)
    assert s.text(1) == "2.5 (1.0-10.0)"
    with pytest.raises(ValueError):
        spread([])


def test_ratios_pair_rounds() -> None:
    # Round 2 is slow for both: per-round ratios stay 2, a ratio of medians would not.
    assert ratios([2.0, 20.0, 4.0], [1.0, 10.0, 2.0]).median == 2.0
    with pytest.raises(ValueError):
        ratios([1.0], [1.0, 2.0])


def test_rotate_changes_the_first_and_reverses_odd_rounds() -> None:
    variants = ["a", "b", "c"]
    orders = [rotate(r, variants) for r in range(6)]
    assert orders[0] == ["a", "b", "c"]
    assert orders[1] == ["c", "b", "a"]
    assert orders[2] == ["b", "c", "a"]
    assert {o[0] for o in orders} == set(variants)
    assert all(sorted(o) == variants for o in orders)


def test_split_calls_adds_up() -> None:
    assert split_calls(10, 3) == [4, 3, 3]
    assert sum(split_calls(4_000, 16)) == 4_000
    with pytest.raises(ValueError):
        split_calls(2, 3)


def test_pack_matches_hiredis() -> None:
    command = ("EVALSHA", "ab" * 20, 4, "k:{ws}:1", b"\x00\r\n", 86_400)
    assert resp.pack(command) == hiredis.pack_command(command)


def test_stamp_follows_lock_and_pins(tmp_path: Path) -> None:
    stamp = peer_venv.wanted_stamp("lock 1")
    assert stamp != peer_venv.wanted_stamp("lock 2")
    assert stamp != peer_venv.wanted_stamp("lock 1", ("coredis==1",))
    assert not peer_venv.is_current(tmp_path, stamp)  # no venv there
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").touch()
    (tmp_path / peer_venv.STAMP).write_text(stamp + "\n")
    assert peer_venv.is_current(tmp_path, stamp)
    assert not peer_venv.is_current(tmp_path, peer_venv.wanted_stamp("lock 2"))


def test_answer_fills_the_entry_exactly() -> None:
    header = "0123456789abcdef,fedcba9876543210"
    answer = answer_of_size(501, len(header), "t")
    entry = header.encode() + b"\n" + Envelope().seal(encode_answer(answer), "k")
    assert len(entry) == 501
    assert set(answer.answer) == {"t"}
    with pytest.raises(ValueError):
        answer_of_size(10, len(header))


def test_same_reply_ignores_container_and_string_types() -> None:
    expected = (1, b"g1,g2", b"value", None)
    assert same_reply([1, "g1,g2", bytearray(b"value"), None], expected)
    assert not same_reply([1, b"g1,g2", b"other", None], expected)
    assert not same_reply([1, b"g1,g2", b"value"], expected)
    assert not same_reply(b"value", expected)
