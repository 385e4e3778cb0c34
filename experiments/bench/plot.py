"""Draws the benchmark records of experiments.bench.bench: images/s (ours beside timm
and the official formulation, where compared) and model FLOP utilisation,
one bar group per configuration.

    python experiments/bench/plot.py [--results=experiments/bench/results.jsonl]
        [--out=experiments/bench/bench.png]

A configuration measured several times shows its latest record. Compile-only
records (memory checks) have no throughput and are listed, not drawn.
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def load_latest(path: str) -> list[dict]:
    """The last timed record of each configuration, in first-seen order."""
    latest = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            # Timed records of the current options (older ones named the
            # attention back-end attention_impl, beside a matmul_impl).
            if "images_per_s" not in record or "attention" not in record:
                continue
            key = (
                record["model"],
                record["mode"],
                record["dtype"],
                record["batch"],
                record["resolution"],
                record["mesh"],
                record["remat"],
                record.get("xla_flags", ""),
                record["attention"],
                record.get("device_kind", ""),  # A GPU's records never replace a CPU's.
            )
            latest[key] = record
    return list(latest.values())


# Flags too long for a tick label, by what they do.
SHORT_FLAGS = {"--xla_cpu_enable_concurrency_optimized_scheduler=false": "memory scheduler"}


def label(record: dict) -> str:
    extras = " remat" if record["remat"] else ""
    if record["attention"] != "auto":
        extras += f" {record['attention']} attention"
    flags = record.get("xla_flags", "").split()
    if flags:
        extras += "\n" + ", ".join(SHORT_FLAGS.get(f, f.replace("--xla_", "")) for f in flags)
    return (
        f"{record['model']} {record['mode']}\n{record['dtype']} b{record['batch']} "
        f"@{record['resolution']}{extras}\n{record['time'][:16].replace('T', ' ')}"
    )


# The peers the benchmark's --compare times beside ours, as its records name them.
PEERS = (("timm", "timm (PyTorch)"), ("official", "official formulation (stock flax.linen)"))


def plot(records: list[dict], out: str) -> None:
    labels = [label(r) for r in records]
    positions = range(len(records))
    bars = [("images_per_s", "vit_jax (JAX/XLA)")]
    bars += [(f"{peer}_images_per_s", name) for peer, name in PEERS]
    width = 0.8 / len(bars)
    fig, (speed, mfu) = plt.subplots(1, 2, figsize=(max(10, 3.6 * len(records)), 5))
    for i, (field, name) in enumerate(bars):
        offset = (i - (len(bars) - 1) / 2) * width
        heights = [r.get(field, 0) for r in records]
        speed.bar([p + offset for p in positions], heights, width, label=name)
    for p, record in zip(positions, records, strict=True):
        ratios = [
            f"×{record[f'ratio_vs_{peer}']:.2f} {peer}"
            for peer, _ in PEERS
            if f"ratio_vs_{peer}" in record
        ]
        if ratios:
            top = max(record.get(field, 0) for field, _ in bars)
            speed.annotate("\n".join(ratios), (p, top), ha="center", va="bottom", fontsize=7)
    speed.set_ylabel("images / s")
    speed.set_title("Throughput (annotated: ours / peer)")
    speed.legend()
    mfu.bar(positions, [100 * (r["mfu"] or 0) for r in records], 0.6, color="tab:green")
    mfu.set_ylabel("% of peak")
    mfu.set_title("Model FLOP utilisation")
    for axis in (speed, mfu):
        axis.set_xticks(list(positions), labels, fontsize=7)
    load = ", ".join(f"{r['load_avg_1m_start']:.1f}" for r in records)
    fig.suptitle(f"{records[0]['device_kind']} — 1-min load average at start: {load}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"Wrote {out} ({len(records)} configurations).")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=os.path.join(HERE, "results.jsonl"))
    parser.add_argument("--out", default=os.path.join(HERE, "bench.png"))
    args = parser.parse_args(argv)
    records = load_latest(args.results)
    if not records:
        raise SystemExit(
            f"{args.results} has no timed records: run python -m experiments.bench.bench first."
        )
    plot(records, args.out)


if __name__ == "__main__":
    main()
