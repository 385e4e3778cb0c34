"""Evaluation: accuracy on any split (ImageNet ReaL included), the few-shot
linear probe, and the VTAB-1k table (vtab; the sweep is experiments/vtab.py).

    from vit_jax.evaluate import accuracy, fewshot
    accuracy.accuracy(logits_fn, params, batches)      # {'accuracy', 'num_counted', ...}
    fewshot.evaluate(fewshot.representation_fn(model), params, datasets)

Command line: `python -m vit_jax.evaluate --help` (docs/evaluation.md).
"""

from vit_jax.evaluate import accuracy, fewshot

__all__ = ["accuracy", "fewshot"]
