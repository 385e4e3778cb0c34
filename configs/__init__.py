"""Experiment configs (ml_collections files with `get_config(arg)`); a package so
that they share configs/common.py. Run commands from the repository root."""
