"""The tooling that tests, benchmarks and the demo share: our own processes (spawned with
their start-time identity, stopped only while still ours), waiting for readiness, the child
environment, a webhook sink, a PromQL client, the service starters, the traffic generator
and the demo. Never imported by the product (`app`, `rollout`): an import-linter contract
says so, and the wheel does not ship it.
"""
