"""Checkpoints in other frameworks' formats, converted to and from the official
parameter tree (vit_jax.checkpoint): `timm` (PyTorch state_dicts)."""
