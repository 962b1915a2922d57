"""The keyspace part 2 invalidates in: the service's real L1 key layout and values, many
workspaces of them, mass-inserted with `redis-cli --pipe`."""

from __future__ import annotations

import base64
import random
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from app.cache.codec import CachedAnswer, Envelope, SourceRef, encode_answer
from app.cache.keys import KeyBuilder
from bench.service_bench.plan import NOTES, BenchError
from devstack.services.common import Service

# Part 2 layout: every workspace holds 100 answers (10 clients x 9, plus 10 workspace-wide).
CLIENTS_PER_WORKSPACE = 10
ANSWERS_PER_CLIENT = 9
WORKSPACE_WIDE_ANSWERS = 10
ANSWERS_PER_WORKSPACE = CLIENTS_PER_WORKSPACE * ANSWERS_PER_CLIENT + WORKSPACE_WIDE_ANSWERS
DIGEST_CHARS = 22  # KeyBuilder.digest: 128-bit HMAC, URL-safe base64 without padding
BENCH_NS = uuid.UUID("6f6a1f0e-5b7c-4c0e-9a51-0d5b1c2e7a10")


@dataclass(frozen=True, slots=True)
class Layout:
    """The keys part 2 writes, in the service's real key layout, with real values."""

    keys: KeyBuilder
    value_client: bytes  # "<client gen>,<epoch>\n" + sealed encoded answer
    value_workspace: bytes  # "<workspace gen>,<epoch>\n" + sealed encoded answer
    token: bytes

    @staticmethod
    def workspace(index: int) -> uuid.UUID:
        return uuid.uuid5(BENCH_NS, f"workspace-{index}")

    @staticmethod
    def client(workspace_index: int, index: int) -> uuid.UUID:
        return uuid.uuid5(BENCH_NS, f"client-{workspace_index}-{index}")

    def workspace_pattern(self, workspace: uuid.UUID) -> str:
        """SCAN pattern for every L1 entry of a workspace (client-scoped and workspace-wide)."""
        entry = self.keys.l1(workspace, None, "x").entry
        return entry[: entry.index("}") + 1] + ":*"

    def workspace_entries(self, index: int) -> list[tuple[bytes, bytes]]:
        ws = self.workspace(index)
        # Deterministic per workspace (so part 2 can restore exactly the entries it deleted);
        # 18 random bytes encode to 24 URL-safe base64 chars, of which a digest keeps 22.
        raw = random.Random(index).randbytes(18 * ANSWERS_PER_WORKSPACE)
        digests = base64.urlsafe_b64encode(raw)
        out: list[tuple[bytes, bytes]] = []
        cut = 0
        prefixes = [(self.keys.l1(ws, self.client(index, c), "x").entry, ANSWERS_PER_CLIENT,
                     self.value_client) for c in range(CLIENTS_PER_WORKSPACE)]
        prefixes.append((self.keys.l1(ws, None, "x").entry, WORKSPACE_WIDE_ANSWERS,
                         self.value_workspace))
        for entry, count, value in prefixes:
            prefix = entry[:-DIGEST_CHARS].encode()
            for _ in range(count):
                out.append((prefix + digests[cut:cut + DIGEST_CHARS], value))
                cut += 24
        return out

    def generation_keys(self, index: int) -> list[bytes]:
        ws = self.workspace(index)
        gens = [self.keys.client_generation(ws, self.client(index, c))
                for c in range(CLIENTS_PER_WORKSPACE)]
        gens += [self.keys.workspace_generation(ws), self.keys.workspace_epoch(ws)]
        return [g.encode() for g in gens]


def make_layout() -> Layout:
    keys = KeyBuilder(secrets.token_bytes(32), "ai-cache")
    sources = tuple(SourceRef(uuid.uuid4(), 1, 0.8 - i / 10) for i in range(4))
    answer = CachedAnswer(
        answer="From the session notes:\n" + "\n".join(
            f"- {NOTES[i]} [session {s.session_id}, v1]" for i, s in enumerate(sources[:3])),
        sources=sources,
    )
    token = b"0123456789abcdef"
    sealed = Envelope().seal(encode_answer(answer), "k")
    return Layout(keys=keys, value_client=token + b"," + token + b"\n" + sealed,
                  value_workspace=token + b"," + token + b"\n" + sealed, token=token)


def _resp_set(key: bytes, value: bytes, ttl: int) -> bytes:
    ttl_b = str(ttl).encode()
    return b"".join((b"*5\r\n$3\r\nSET\r\n$%d\r\n" % len(key), key,
                     b"\r\n$%d\r\n" % len(value), value,
                     b"\r\n$2\r\nEX\r\n$%d\r\n" % len(ttl_b), ttl_b, b"\r\n"))


def _populate_chunks(layout: Layout, answers: int) -> Iterator[bytes]:
    l1_ttl, gen_ttl = 3600, 86_400  # long enough not to expire during the measurement
    parts: list[bytes] = []
    for w in range(answers // ANSWERS_PER_WORKSPACE):
        parts.extend(_resp_set(k, v, l1_ttl) for k, v in layout.workspace_entries(w))
        parts.extend(_resp_set(g, layout.token, gen_ttl) for g in layout.generation_keys(w))
        if len(parts) >= 50_000:
            yield b"".join(parts)
            parts.clear()
    if parts:
        yield b"".join(parts)


def populate(redis: Service, layout: Layout, answers: int) -> float:
    """Mass-insert `answers` L1 entries (and their generation keys) with `redis-cli --pipe`."""
    cli = shutil.which("redis-cli")
    if cli is None or redis.port is None:
        raise BenchError("redis-cli is missing")
    started = time.perf_counter()
    with subprocess.Popen([cli, "-h", "127.0.0.1", "-p", str(redis.port), "--pipe"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            for chunk in _populate_chunks(layout, answers):
                proc.stdin.write(chunk)
            proc.stdin.close()
            output = proc.stdout.read().decode(errors="replace")
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0 or "errors: 0," not in output:
        raise BenchError(f"redis-cli --pipe failed: {output}")
    return time.perf_counter() - started
