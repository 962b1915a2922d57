"""The private Redis starter on a port that is already taken."""

from __future__ import annotations

import pytest

from devstack.errors import ServiceError
from devstack.services import redis as redis_svc

pytestmark = pytest.mark.integration


def test_a_port_held_by_another_redis_is_a_failed_start_not_a_borrowed_server() -> None:
    holder = redis_svc.start_private_redis(name="redis-port-holder")
    try:
        assert holder.port is not None
        # The holder answers PING on that port at once; the new process must not pass for it.
        with pytest.raises(ServiceError, match="redis exited with 1 during start"):
            redis_svc.start_private_redis(port=holder.port, name="redis-port-taker")
        assert holder.process_alive()
    finally:
        redis_svc.stop(holder)
