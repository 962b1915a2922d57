"""The L1 hit's Redis call through several Python clients, side by side (issue 15).

`python -m bench.client_bench` measures the CPU per call and the calls per second of one
EVALSHA of the real `_LOOKUP` script (app/cache/store.py) on the real key layout, through
redis-py as the service uses it, redis-py used directly, coredis, valkey-glide, a bare
asyncio stream with hiredis (the floor), and redis-py's GET of a value of the same size
(the ceiling's call), on one Redis and on a Redis Cluster. coredis and valkey-glide live in
a separate virtualenv (`peer_venv`), never in the project's lock. See bench/README.md.
"""
