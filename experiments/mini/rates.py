"""How fast the studies' models train here: the measurement each study's COST
is computed from.

    python -m experiments.mini.rates [--steps=60] [--data_dir=DIR] [--only=LABEL] [--toy]

Trains every distinct model the studies name (their MODEL or MODELS) with the
studies' pre-training config (runs.pretrain_config: batch 128 at 28 px on
Fashion-MNIST's classes 0-4) for 2 × --steps steps, logging every --steps, and
reports the trainer's own steps/s over the second half (compilation and
start-up fall in the first). --toy times each family's smallest member
instead (a smoke test). Writes experiments/results/mini_rates.json with the
revision, the CPU and the load average, and prints one line a model.
"""

import argparse
import importlib
import json
import os
import tempfile

from experiments.fashion_mnist import provenance
from experiments.mini import STUDIES
from experiments.mini.provenance import code_revision
from experiments.mini.runs import Setting, logged_scalars, pretrain_config
from vit_jax.train import train_and_evaluate

OUT = "experiments/results/mini_rates.json"


def study_models() -> dict:
    """{label: MiniModel} of every model a study trains, in study order."""
    models = {}
    for name in STUDIES:
        module = importlib.import_module(f"experiments.mini.{name}")
        for model in (*getattr(module, "MODELS", ()), getattr(module, "MODEL", None)):
            if model is not None:
                models.setdefault(model.label, model)
    return models


def steps_per_second(setting: Setting, model, steps: int) -> float:
    """The trainer's steps/s between its logs at `steps` and 2 × `steps`."""
    config = pretrain_config(setting, model, steps=2 * steps, seed=0)
    config.total_steps = 2 * steps  # Also at toy size, whose schedules are otherwise fixed.
    config.warmup_steps = 0
    config.log_every = steps
    with tempfile.TemporaryDirectory() as workdir:
        train_and_evaluate(config, workdir)
        return logged_scalars(workdir)["train/steps_per_sec"][2 * steps]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.mini.rates", description=__doc__)
    parser.add_argument("--steps", type=int, default=60, help="measured after as many")
    parser.add_argument("--data_dir", default=None, help="Fashion-MNIST IDX folder")
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--only", default="", help="only the models whose label has this")
    parser.add_argument("--toy", action="store_true", help="each family's smallest member")
    args = parser.parse_args(argv)
    setting = Setting(toy=args.toy, seeds=(0,), out_dir="", work_dir="", data_dir=args.data_dir)
    record = {"command": "python -m experiments.mini.rates", **provenance(), "rates": {}}
    # The code that ran ('+dirty' when uncommitted), as the studies record it:
    # results written beside it by other runs do not count.
    record["revision"] = code_revision(".")
    del record["clean"]
    loads = []
    for label, model in study_models().items():
        if args.only not in label:
            continue
        rate = steps_per_second(setting, model, args.steps)
        loads.append(os.getloadavg()[0])
        record["rates"][label] = round(rate, 2)
        print(f"{label}: {rate:.2f} steps/s at batch 128 ({model.family})", flush=True)
    record["load_average"] = {"mean": round(sum(loads) / len(loads), 2), "max": max(loads)}
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"Wrote {args.out}.")


if __name__ == "__main__":
    main()
