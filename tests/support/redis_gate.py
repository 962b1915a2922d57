"""A loopback TCP proxy in front of a real Redis that can stop one command from arriving.

It lets a test kill a real controller process at an exact point of its protocol: between
the flag write and the state write. The controller stores its intent (a fenced script over
the `fence` and `intent` keys), writes the flags elsewhere, then commits (a fenced script
over the `state` and `log` keys, among others). The gate forwards everything, notices the
intent going through, and then holds the first commit: that command never reaches Redis, the
process waits for its answer, and the test kills it there.

It recognises the commands by the key names in the bytes a client sends, which is enough for
the controller's own scripts (their keys are in the first few hundred bytes of the command);
it is a test tool, not a Redis protocol parser.
"""

from __future__ import annotations

import asyncio

from rollout.adapters.redis_state import RolloutKeys
from tests.support.tcp_proxy import TcpProxy


class RedisGate(TcpProxy):
    def __init__(self, upstream_host: str, upstream_port: int, keys: RolloutKeys) -> None:
        super().__init__(upstream_host, upstream_port)
        self._intent = keys.intent.encode()
        self._log = keys.log.encode()
        self.intent_passed = asyncio.Event()
        self.commit_held = asyncio.Event()

    def _holds(self, chunk: bytes) -> bool:
        """Hold the first commit after an intent: the write that would record the stage."""
        if self.commit_held.is_set():
            return False
        if self._intent in chunk and self._log not in chunk and b"to_stage" in chunk:
            self.intent_passed.set()
            return False
        return self.intent_passed.is_set() and self._log in chunk and self._intent in chunk

    async def _admit(self, chunk: bytes) -> bool:
        if self._holds(chunk):
            self.commit_held.set()
            await asyncio.Event().wait()  # this connection never moves again
        return True
