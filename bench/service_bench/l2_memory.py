"""Part 3: what one L2 entry costs in Redis memory, and how close its decoded vector stays
to the original."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from typing import Any

import numpy as np

from app.cache.codec import Envelope, decode_embedding, encode_embedding
from app.cache.keys import KeyBuilder
from app.main import build_redis
from app.settings import Settings
from bench.service_bench.plan import BenchError
from bench.service_bench.report import Row, say, verdict
from devstack.services.common import Service

# Targets (issue 2, "Benchmark").
TARGET_L2_BYTES = 2800  # 2.8 KB, read as 2,800 bytes (the stricter reading)
TARGET_COSINE = 0.9999


async def _l2_memory(url: str) -> dict[str, dict[str, float]]:
    settings = Settings(_env_file=None, redis_url=url)
    keys = KeyBuilder(secrets.token_bytes(32), settings.cache_key_prefix)
    workspace = uuid.uuid4()
    model, dims = settings.cohere_embed_model, 1024
    rng = np.random.default_rng(20240611)
    vectors = rng.standard_normal((100, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    variants = [
        ("float16", settings.l2_dtype, Envelope()),
        ("float32", "float32", Envelope()),
        ("float16 + AES-GCM", settings.l2_dtype, Envelope(os.urandom(32), "k1")),
    ]
    out: dict[str, dict[str, float]] = {}
    redis = build_redis(settings)
    try:
        for name, dtype, envelope in variants:
            usages, cosines, sizes = [], [], []
            for i, vector in enumerate(vectors):
                key = keys.l2(workspace, model, dims, f"{name} question number {i}")
                value = envelope.seal(encode_embedding(vector, dtype), key)
                await redis.set(key, value, ex=settings.l2_ttl_seconds)
                usages.append(int(await redis.memory_usage(key, samples=0) or 0))
                stored = await redis.get(key)
                if not isinstance(stored, bytes):
                    raise BenchError(f"L2 entry {key} vanished")
                decoded = decode_embedding(envelope.open(stored, key), dims).astype(np.float64)
                original = vector.astype(np.float64)
                cosines.append(float(decoded @ original
                                     / (np.linalg.norm(decoded) * np.linalg.norm(original))))
                sizes.append(len(value))
                await redis.delete(key)
            out[name] = {"memory_usage_bytes": max(usages), "memory_usage_min": min(usages),
                         "value_bytes": max(sizes), "key_bytes": len(key),
                         "cosine_min": min(cosines)}
    finally:
        await redis.aclose()
    return out


def part3_l2_memory(redis: Service) -> tuple[list[Row], dict[str, Any]]:
    say("\n[3] MEMORY USAGE of one 1024-d L2 entry (KeyBuilder.l2 + encode_embedding + "
        "Envelope, SET EX), 100 random unit vectors")
    found = asyncio.run(_l2_memory(redis.url))
    for name, m in found.items():
        say(f"    {name:18s} MEMORY USAGE {m['memory_usage_bytes']:.0f} B (value "
            f"{m['value_bytes']:.0f} B, key {m['key_bytes']:.0f} B), min cosine "
            f"{m['cosine_min']:.9f}")
    f16, f32, enc = found["float16"], found["float32"], found["float16 + AES-GCM"]
    rows = [
        Row("3a L2 entry MEMORY USAGE (float16)", f"{f16['memory_usage_bytes']:,.0f} B",
            f"<= {TARGET_L2_BYTES:,} B", f"{f16['memory_usage_bytes'] / TARGET_L2_BYTES:.2f}x",
            verdict(f16["memory_usage_bytes"] <= TARGET_L2_BYTES)),
        Row("3b cosine decoded vs original (min/100)", f"{f16['cosine_min']:.9f}",
            f">= {TARGET_COSINE}", "-", verdict(f16["cosine_min"] >= TARGET_COSINE)),
        Row("3c L2 entry, float32 / float16+AES-GCM",
            f"{f32['memory_usage_bytes']:,.0f} / {enc['memory_usage_bytes']:,.0f} B",
            "(comparison)", f"{f32['memory_usage_bytes'] / f16['memory_usage_bytes']:.2f}x / "
            f"{enc['memory_usage_bytes'] / f16['memory_usage_bytes']:.2f}x", "info"),
    ]
    return rows, {"variants": found, "target_bytes": TARGET_L2_BYTES}
