"""Evaluation: seeded rollouts, episode reports, attention videos (with the scene they draw),
attribution of attention to road elements, the attention report, and ``scripts/evaluate.py``."""
