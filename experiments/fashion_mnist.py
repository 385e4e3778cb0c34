"""The from-scratch Fashion-MNIST run (configs/fashion_mnist.py), with its provenance.

    python -m experiments.fashion_mnist [--workdir=workdirs/fashion_mnist]
        [--out=experiments/results] [-- --config.FIELD=VALUE ...]  # '--': to vit_jax.main

Runs `python -m vit_jax.main --config=configs/fashion_mnist.py` in a subprocess
(exactly the command a user types) and writes OUT/fashion_mnist.json and
OUT/fashion_mnist.png: the git revision and whether the tree was clean when
the run started, the date, the CPU and its cores, the load average (the run
may share its cores), the command, the wall time, the final test accuracy
and the test accuracy and loss at every evaluation, read from the run's
TensorBoard events. The JSON is rewritten every minute while the run goes
("finished": false), so a long run shows its curve as it grows.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from experiments.machine import hardware

CONFIG = "configs/fashion_mnist.py"
NAME = "fashion_mnist"
PUBLISHED_SMALL_VIT = 0.92  # Small ViTs (6 layers, width 64-128, 4x4 patches), from scratch.
POLL_SECONDS = 60


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, check=False
    ).stdout.strip()


def provenance() -> dict:
    """Revision, cleanliness (tracked and untracked files) and the machine."""
    return {
        "revision": git("rev-parse", "HEAD") or "unknown",
        "clean": git("status", "--porcelain") == "",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "hardware": hardware(),
    }


def curve(workdir: str) -> list[dict]:
    """Test accuracy and loss (and their EMA twins when the config averages) at
    every evaluation, in step order, from the run's TensorBoard events (the
    trainer writes scalars as tensor summaries)."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    events = event_accumulator.EventAccumulator(workdir, size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    by_step: dict[int, dict] = {}
    for key in ("accuracy", "loss", "ema_accuracy", "ema_loss"):
        if f"test/{key}" in tags:
            for event in events.Tensors(f"test/{key}"):
                value = round(float(tensor_util.make_ndarray(event.tensor_proto)), 5)
                by_step.setdefault(event.step, {"step": event.step})[key] = value
    return [by_step[step] for step in sorted(by_step)]


def plot(path: str, points: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # Files only; no display on a server.
    import matplotlib.pyplot as plt

    steps = [p["step"] for p in points]
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    axes.plot(steps, [100 * p["accuracy"] for p in points], marker="o", label="test accuracy")
    if all("ema_accuracy" in p for p in points):
        axes.plot(steps, [100 * p["ema_accuracy"] for p in points], marker=".", label="EMA")
    axes.axhline(100 * PUBLISHED_SMALL_VIT, color="grey", ls="--", label="published small ViTs")
    axes.set_xlabel("training step")
    axes.set_ylabel("Fashion-MNIST test accuracy (%)")
    axes.set_ylim(80, 95)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="workdirs/fashion_mnist")
    parser.add_argument("--out", default="experiments/results")
    parser.add_argument("overrides", nargs="*", help="after '--': flags for vit_jax.main")
    args = parser.parse_args(argv)

    command = [
        sys.executable,
        "-m",
        "vit_jax.main",
        f"--config={CONFIG}",
        f"--workdir={args.workdir}",
        *args.overrides,
    ]
    shown_command = shlex.join(["python", *command[1:]])
    record = {"command": shown_command, **provenance(), "finished": False}
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, f"{NAME}.json")
    loads = []

    def write(wall_seconds: float) -> None:
        points = curve(args.workdir)
        record.update(
            wall_seconds=round(wall_seconds, 1),
            # The 1-minute load average while it ran: above the core count, the
            # run shared its cores and the wall time overstates its cost.
            load_average={"mean": round(sum(loads) / len(loads), 2), "max": round(max(loads), 2)},
            curve=points,
        )
        if points:
            record["test_accuracy"] = points[-1]["accuracy"]
            if "ema_accuracy" in points[-1]:
                record["ema_test_accuracy"] = points[-1]["ema_accuracy"]
        with open(json_path, "w") as f:
            json.dump(record, f, indent=1)

    start = time.time()
    process = subprocess.Popen(command)
    while process.poll() is None:
        loads.append(os.getloadavg()[0])
        try:
            process.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            write(time.time() - start)
    loads.append(os.getloadavg()[0])
    if process.returncode:
        write(time.time() - start)
        print(f"{shown_command} failed (exit {process.returncode}); partial curve in {json_path}.")
        return process.returncode
    record["finished"] = True
    write(time.time() - start)
    plot(os.path.join(args.out, f"{NAME}.png"), record["curve"])
    print(
        f"Fashion-MNIST test accuracy {100 * record['test_accuracy']:.2f}% in "
        f"{record['wall_seconds'] / 60:.1f} min ({json_path})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
