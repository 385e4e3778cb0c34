"""Checkpoints in the forms users hold, to and from the official parameter tree
(vit_jax.checkpoint): `timm` (PyTorch state_dicts), `huggingface` (transformers
model directories), and `augreg` (the recipe spelled in an AugReg file name)."""
