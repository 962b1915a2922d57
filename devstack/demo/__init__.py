"""The demo: the whole staged rollout on this machine, driven by the real controller
(`scripts/demo`; the command and a map of the modules are in cli.py)."""
