"""The VTAB-1k sweep (the paper's Sec. 4.1, Table 2, Fig. 2): fine-tune a
pre-trained checkpoint on each of the 19 tasks (1000 training images each)
with the training loop, test it, and aggregate Natural / Specialized /
Structured / mean into a table.

The VTAB score is the mean over all tasks; the group columns are the means
within each group. Every finished task writes `WORKDIR/TASK/result.json`, so
an interrupted sweep resumes where it stopped (and an interrupted task
resumes from its own training checkpoint).
"""

import importlib.util
import json
import os
import sys

import jax
import ml_collections
import numpy as np
from absl import logging

from vit_jax.errors import UserError
from vit_jax.evaluate.accuracy import accuracy

GROUP_TITLES = {"natural": "Natural", "specialized": "Specialized", "structured": "Structured"}


def task_configs(
    config_file: str, tasks, model: str, pretrained: str, steps: int | None = None
) -> dict[str, ml_collections.ConfigDict]:
    """One fine-tuning config per task from the VTAB config file (configs/vit_vtab.py
    holds the paper's recipe), which takes `model=...,task=...,pretrained=...`.

    `steps` shortens the 2,500 steps (warm-up capped at a fifth of them).
    """
    module = _load_config_module(config_file)
    configs = {}
    for task in tasks:
        config = module.get_config(f"model={model},task={task},pretrained={pretrained}")
        if steps:
            config.total_steps = steps
            config.warmup_steps = min(config.warmup_steps, steps // 5)
        configs[task] = config
    return configs


def _load_config_module(config_file: str):
    """Imports a config file by path, as ml_collections' --config flag does."""
    if not os.path.exists(config_file):
        raise UserError(
            f"config file {config_file} not found: run from the repository root or pass "
            "--config=PATH/TO/vit_vtab.py."
        )
    config_dir = os.path.dirname(os.path.abspath(config_file))
    if os.path.exists(os.path.join(config_dir, "__init__.py")):
        # Config files import their siblings as `configs.common`: the package's
        # parent must be importable, as it is when run from the repository root.
        package_parent = os.path.dirname(config_dir)
        if package_parent not in sys.path:
            sys.path.insert(0, package_parent)
    spec = importlib.util.spec_from_file_location("vtab_config", config_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
