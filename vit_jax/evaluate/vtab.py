"""The VTAB-1k sweep (PAPER.md §4): fine-tune a pre-trained checkpoint on each of
the 19 tasks (1000 training images each) with the training loop, test it, and
aggregate Natural / Specialized / Structured / mean into a table.

The VTAB score is the mean over all tasks; the group columns are the means
within each group. Every finished task writes `WORKDIR/TASK/result.json`, so
an interrupted sweep resumes where it stopped (and an interrupted task
resumes from its own training checkpoint).
"""

import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from vit_jax.evaluate.accuracy import accuracy

GROUP_TITLES = {"natural": "Natural", "specialized": "Specialized", "structured": "Structured"}


def task_config(
    task: str, pretrained: str, model_name: str, image_size: int = 384
) -> ml_collections.ConfigDict:
    """The paper's VTAB fine-tuning of `model_name` from `pretrained` on one task:
    SGD with momentum, lr 0.01, 2,500 steps, batch 512, cosine decay, 500
    warm-up steps, no weight decay, clipping at norm 1, at `image_size`."""
    from vit_jax import data
    from vit_jax.train import default_config

    config = default_config()
    config.model_name = model_name
    config.pretrained = pretrained
    config.dataset = f"vtab/{task}"
    config.train_split = "train800val200"
    config.test_split = "test"
    config.image_size = image_size
    config.pp_train = data.recipe("finetune", image_size)
    config.pp_eval = data.recipe("finetune_eval", image_size)
    config.optimizer = "sgd"
    config.momentum = 0.9
    config.lr = 0.01
    config.total_steps = 2500
    config.warmup_steps = 500
    config.batch_size = 512
    config.weight_decay = 0.0
    config.lr_decay = "cosine"
    config.grad_clip_norm = 1.0
    config.eval_every = 0
    return config


def test_accuracy(config, params) -> float:
    """Top-1 accuracy of `params` on the config's test split."""
    from vit_jax import data
    from vit_jax.models import get_model

    num_classes = data.get_dataset_info(config.dataset, config.data_dir).num_classes
    model = get_model(config.model_name, num_classes, **config.model)
    logits_fn = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
    batches = data.get_iterator(
        config.dataset,
        config.test_split,
        batch_size=config.eval_batch_size or config.batch_size,
        preprocess=config.pp_eval,
        train=False,
        data_dir=config.data_dir,
        process_index=0,
        process_count=1,
    )
    return accuracy(logits_fn, jax.device_get(params), batches)["accuracy"]


def run_sweep(configs: dict[str, ml_collections.ConfigDict], workdir: str) -> dict[str, float]:
    """Fine-tunes and tests every task's config in turn → {task: test accuracy}."""
    from vit_jax.train import train_and_evaluate

    results = {}
    for index, (task, config) in enumerate(configs.items(), 1):
        task_dir = os.path.join(workdir, task)
        result_file = os.path.join(task_dir, "result.json")
        if os.path.exists(result_file):
            with open(result_file) as f:
                results[task] = json.load(f)["accuracy"]
            logging.info("[%d/%d] %s: done before, %.4f", index, len(configs), task, results[task])
            continue
        logging.info("[%d/%d] %s: fine-tuning in %s", index, len(configs), task, task_dir)
        state = train_and_evaluate(config, task_dir)
        results[task] = float(test_accuracy(config, state.params))
        with open(result_file, "w") as f:
            json.dump({"task": task, "accuracy": results[task]}, f)
        logging.info("[%d/%d] %s: test accuracy %.4f", index, len(configs), task, results[task])
    return results


def summarize(results: dict[str, float], groups: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """Group means over the tasks present, and the mean over all tasks present."""
    summary = {}
    for group, tasks in groups.items():
        scores = [results[t] for t in tasks if t in results]
        if scores:
            summary[group] = float(np.mean(scores))
    summary["mean"] = float(np.mean(list(results.values())))
    return summary


def results_table(results: dict[str, float], groups: dict[str, tuple[str, ...]]) -> str:
    """A Markdown table: one row per task (accuracy in %), then the aggregates."""
    summary = summarize(results, groups)
    lines = ["| group | task | accuracy (%) |", "|---|---|---|"]
    for group, tasks in groups.items():
        for task in tasks:
            if task in results:
                lines.append(
                    f"| {GROUP_TITLES.get(group, group)} | {task} | {100 * results[task]:.2f} |"
                )
    missing = sorted(set(results) - {t for tasks in groups.values() for t in tasks})
    lines += [f"| other | {task} | {100 * results[task]:.2f} |" for task in missing]
    for group, tasks in groups.items():
        if group in summary:
            present = sum(t in results for t in tasks)
            title = GROUP_TITLES.get(group, group)
            lines.append(f"| **{title}** | mean of {present} | {100 * summary[group]:.2f} |")
    lines.append(f"| **VTAB** | mean of {len(results)} tasks | {100 * summary['mean']:.2f} |")
    return "\n".join(lines)
