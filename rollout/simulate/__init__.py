"""`rollout simulate`: Monte Carlo of a whole rollout plan through the pure core (DESIGN.md
§7, "Tools for release managers").

Every run draws synthetic traffic (traffic.py) under a scenario (scenarios.py), lets each
check read it through its own PromQL (promql.py, tracks.py) and hands the cycles to the
real `rollout.core.decide.decide` (run.py); batch.py runs many, on the same draws for every
plan compared, summary.py turns them into figures and chart.py into a PNG. Pure apart from
worker processes: the command line (rollout/cli/simulate.py) reads plans and writes files.
"""
