"""The decision benchmark (issue 10): how often the default plan rolls back a healthy
rollout (A/A noise), and how often it catches an L1-cohort error regression (1 % -> 3 %)
before l1-10 advances, at 0.5 and 30 queries/s; side by side with the previous threshold
plan on the same random draws.

Each run simulates a whole rollout through the pure core (rollout.core.decide.decide, the
checks judged with judge / judge_counts) on synthetic traffic read through the plans' own
PromQL; see bench/README.md for the model and the figures.
"""
