"""The paper's experiments, by name: list them, see what they cost, run them.

    python -m experiments.paper list
    python -m experiments.paper plan scaling [--only ViT-H] [--set field=value ...]
    python -m experiments.paper plan pods [--reuse] [--only ViT-H_14]   # TPU placements, H100s
    python -m experiments.paper run posemb --print-command       # the commands (default)
    python -m experiments.paper run posemb --local --tiny         # in-process, CPU-sized
    python -m experiments.paper run mpp --local --set total_steps=100 --set batch_size=64

`plan` prints, per run, its config and overrides, parameters, forward GFLOPs at
the config's resolution, training exaFLOPs (3 × forward FLOPs × images seen, App.
Table 6's convention), the paper's published number for that cell and the time in
TPUv3-core-days beside Table 2's where it gives one (and in days of a benchmarked
device where experiments/bench measured the model). `plan pods` is the pod view
(experiments/pod_plan.py): for every pre-training and high-resolution
fine-tuning run, the smallest, cheapest and fastest TPU v3 placement and the
smallest H100 count where its step fits, from compiles. `run --local` trains each
run in turn in this process, at the config's scale or shrunk by --tiny (the
'testing' ViT on digits, 2 steps) and/or --set.
Work directories: workdirs/paper/<experiment>/<run>; a fine-tuning run reads the
params.npz its pre-training run exports there. Run from the repository root.
"""

import argparse
import math
import os
import shlex
import sys
import time

from experiments import estimate, matrix, overrides
from vit_jax.errors import cli


def _select(experiment: matrix.Experiment, only: str | None) -> list[matrix.Run]:
    runs = [run for run in experiment.runs if not only or only in run.name]
    if not runs:
        raise SystemExit(f"No run of {experiment.name!r} has {only!r} in its name.")
    return runs


def _get_experiment(name: str) -> matrix.Experiment:
    experiments = matrix.experiments()
    if name not in experiments:
        raise SystemExit(f"Unknown experiment {name!r}; known: {', '.join(experiments)}.")
    return experiments[name]


def run_overrides(run: matrix.Run, config, extra, tiny: bool) -> tuple[str, ...]:
    """The run's own overrides, then --tiny's, then the user's --set (last wins)."""
    return run.overrides + (overrides.tiny_overrides(config) if tiny else ()) + tuple(extra)


def planned(experiment: matrix.Experiment, extra=(), tiny=False, only=None):
    """(run, final config, its overrides, RunCost) for each selected run."""
    for run in _select(experiment, only):
        config = run.load_config()
        items = run_overrides(run, config, extra, tiny)
        config = overrides.apply_overrides(config, items)
        yield run, config, items, estimate.run_cost(config)


def _published_text(run: matrix.Run, cost: estimate.RunCost) -> str:
    parts = []
    for what, number in run.published:
        if what == matrix.TABLE_2_CORE_DAYS:
            continue  # Printed beside the estimate, on the core-days line.
        text = f"{what} {number:g}"
        if what == "exaFLOPs":
            text += f" (measured here {100 * (cost.train_exaflops / number - 1):+.1f}%)"
        parts.append(text)
    if not parts and matrix.TABLE_2_CORE_DAYS in dict(run.published):
        return "Table 2's pre-training cost: beside the estimate, on the core-days line"
    return "; ".join(parts) or "(no published number for this cell)"


def _days(days: float) -> str:
    return f"{days:,.0f}" if days >= 100 else f"{days:.3g}"


def _core_days_text(run: matrix.Run, cost: estimate.RunCost) -> str:
    """The estimate in TPUv3-core-days, with Table 2's number and the estimate
    as a percentage of it where the run is one of Table 2's pre-trainings."""
    text = f"{_days(cost.tpu_core_days)} TPUv3-core-days"
    published = dict(run.published).get(matrix.TABLE_2_CORE_DAYS)
    if published:
        text += (
            f" (Table 2: {published:,.0f} TPUv3-core-days; the estimate is "
            f"{100 * cost.tpu_core_days / published:.0f}% of it)"
        )
    return text


def format_plan_entry(index, total, run, config, items, cost) -> str:
    steps = config.total_steps or math.ceil(cost.images_seen / config.batch_size)
    length = (
        f"{config.total_steps:,} steps"
        if config.total_steps
        else f"{config.total_epochs:g} epochs of {config.dataset}[{config.train_split}]"
    )
    lines = [
        f"[{index}/{total}] {run.name}",
        f"  config     {run.config_spec}",
        f"  overrides  {' '.join(items) or '(none)'}",
        f"  model      {config.model_name} {dict(config.model) or ''}".rstrip()
        + f": {cost.params / 1e6:,.1f}M params, {cost.forward_gflops:,.2f} GFLOPs "
        f"forward at {config.image_size} px",
        f"  training   {length}: {cost.images_seen:,.0f} images, batch "
        f"{config.batch_size}, {steps:,} steps -> {cost.train_exaflops:,.3g} exaFLOPs",
        f"  paper      {_published_text(run, cost)}",
        f"  core-days  {_core_days_text(run, cost)}",
    ]
    if cost.measured_days is not None:
        lines.append(f"  measured   {_days(cost.measured_days)} {cost.measured_unit}")
    return "\n".join(lines)


def command_list(_args) -> None:
    for experiment in matrix.experiments().values():
        print(f"{experiment.name:<12} {len(experiment.runs):>3} runs  {experiment.title}")


def command_plan(args) -> None:
    experiment = _get_experiment(args.experiment)
    runs = _select(experiment, args.only)
    print(f"{experiment.title}: {len(runs)} run(s)")
    for index, entry in enumerate(planned(experiment, args.set, args.tiny, args.only), 1):
        print(format_plan_entry(index, len(runs), *entry), flush=True)
    print(f"core-days: {estimate.CORE_DAYS_BASIS}.")


def workdir(experiment: str, run: matrix.Run) -> str:
    return os.path.join(matrix.WORKDIR_ROOT, experiment, run.name)


def shell_command(experiment: str, run: matrix.Run, items) -> str:
    words = [
        "python",
        "-m",
        "vit_jax.main",
        f"--config={run.config_spec}",
        f"--workdir={workdir(experiment, run)}",
        *overrides.as_flags(items),
    ]
    return " ".join(shlex.quote(word) for word in words)


def command_run(args) -> None:
    experiment = _get_experiment(args.experiment)
    runs = _select(experiment, args.only)
    if not args.local:
        for run in runs:
            print(
                shell_command(
                    experiment.name, run, run_overrides(run, run.load_config(), args.set, args.tiny)
                )
            )
        return
    from vit_jax import train  # Only now: it pulls in TensorFlow.

    for index, run in enumerate(runs, 1):
        config = run.load_config()
        config = overrides.apply_overrides(config, run_overrides(run, config, args.set, args.tiny))
        directory = workdir(experiment.name, run)
        print(f"[{index}/{len(runs)}] {run.name} -> {directory}", flush=True)
        start = time.perf_counter()
        train.train_and_evaluate(config, directory)
        print(f"[{index}/{len(runs)}] {run.name} done in {time.perf_counter() - start:.0f} s.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.paper", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the experiments and their run counts")
    for name, help_text in (("plan", "costs and published numbers"), ("run", "train the runs")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("experiment")
        sub.add_argument("--only", help="only runs whose name contains this")
        sub.add_argument(
            "--set", action="append", default=[], metavar="FIELD=VALUE", help="config override"
        )
        sub.add_argument(
            "--tiny", action="store_true", help="shrink to a CPU run (see overrides.TINY)"
        )
    run_parser = commands.choices["run"]
    mode = run_parser.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true", help="train here, in this process")
    mode.add_argument("--print-command", action="store_true", help="print commands (default)")
    return parser


@cli
def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["plan", "pods"]:  # Its own flags: experiments/pod_plan.py.
        from experiments import pod_plan

        return pod_plan.main(argv[2:])
    args = build_parser().parse_args(argv)
    {"list": command_list, "plan": command_plan, "run": command_run}[args.command](args)


if __name__ == "__main__":
    main(sys.argv[1:])
