"""Runners over the paper's experiment matrix (`python -m experiments.paper`)."""
