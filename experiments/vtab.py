"""The VTAB-1k sweep (the paper's Sec. 4.1, Table 2, Fig. 2): fine-tune a
pre-trained checkpoint on each of the 19 tasks (1000 training images each)
with the training loop, test it, and print the Natural / Specialized /
Structured / mean table (also written to WORKDIR/vtab.md).

    python -m experiments.vtab --checkpoint=F.npz --model=ViT-B_16 --workdir=vtab_runs
    python -m experiments.vtab ... --tasks=dtd,svhn --steps=100   # a subset, shorter

The VTAB score is the mean over all tasks; the group columns are the means
within each group (vit_jax.evaluate.vtab). Every finished task writes
`WORKDIR/TASK/result.json`, so an interrupted sweep resumes where it stopped
(and an interrupted task resumes from its own training checkpoint).
"""

import argparse
import importlib
import json
import os
import sys
from pathlib import PurePosixPath

import jax
import ml_collections
from absl import logging

from vit_jax import data
from vit_jax.errors import UserError, cli
from vit_jax.evaluate.accuracy import accuracy
from vit_jax.evaluate.vtab import results_table
from vit_jax.models import get_model
from vit_jax.train import train_and_evaluate

DEFAULT_RECIPE = "configs/vit_vtab.py"


def _config_module(config_file: str):
    """The config module `configs/NAME.py` names, imported from the installed
    `configs` package (its files import their siblings as `configs.common`)."""
    path = PurePosixPath(config_file)
    if path.suffix != ".py" or len(path.parts) != 2 or path.parts[0] != "configs":
        raise UserError(
            f"--config={config_file}: name a file of the configs package, e.g. {DEFAULT_RECIPE}."
        )
    try:
        return importlib.import_module(f"configs.{path.stem}")
    except ModuleNotFoundError as e:
        raise UserError(f"--config={config_file}: no such config ({e}).") from None


def task_configs(
    config_file: str, tasks, model: str, pretrained: str, steps: int | None = None
) -> dict[str, ml_collections.ConfigDict]:
    """One fine-tuning config per task from the VTAB config file (configs/vit_vtab.py
    holds the paper's recipe), which takes `model=...,task=...,pretrained=...`.

    `steps` shortens the 2,500 steps (warm-up capped at a fifth of them).
    """
    module = _config_module(config_file)
    configs = {}
    for task in tasks:
        config = module.get_config(f"model={model},task={task},pretrained={pretrained}")
        if steps:
            config.total_steps = steps
            config.warmup_steps = min(config.warmup_steps, steps // 5)
        configs[task] = config
    return configs


def accuracy_on_test_split(config, params) -> float:
    """Top-1 accuracy of `params` on the config's test split."""
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
        results[task] = float(accuracy_on_test_split(config, state.params))
        with open(result_file, "w") as f:
            json.dump({"task": task, "accuracy": results[task]}, f)
        logging.info("[%d/%d] %s: test accuracy %.4f", index, len(configs), task, results[task])
    return results


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m experiments.vtab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="the pre-trained checkpoint")
    parser.add_argument("--model", required=True, help="registered model name, e.g. ViT-B_16")
    parser.add_argument("--workdir", required=True, help="one sub-directory per task; resumable")
    parser.add_argument("--tasks", help="comma-separated subset; default: all 19")
    parser.add_argument("--steps", type=int, help="override the paper's 2,500 steps")
    parser.add_argument("--config", default=DEFAULT_RECIPE, help="per-task recipe")
    parser.add_argument("--data_dir", help="TFDS data directory")
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    logging.set_verbosity(logging.INFO)
    tasks = args.tasks.split(",") if args.tasks else list(data.VTAB_TASKS)
    unknown = sorted(set(tasks) - set(data.VTAB_TASKS))
    if unknown:
        raise UserError(f"unknown VTAB tasks {unknown}; known: {', '.join(data.VTAB_TASKS)}.")
    configs = task_configs(args.config, tasks, args.model, args.checkpoint, args.steps)
    for config in configs.values():
        config.data_dir = args.data_dir
    results = run_sweep(configs, args.workdir)
    table = results_table(results, data.VTAB_GROUPS)
    with open(os.path.join(args.workdir, "vtab.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return table


if __name__ == "__main__":
    cli(main)(sys.argv[1:])
