"""What a study writes: per-seed records → mean ± std rows → JSON, a markdown
table and PNG plots, stamped with the command, seeds and git revision."""

import dataclasses
import json
import os
import subprocess
import textwrap
import time

import matplotlib

matplotlib.use("Agg")  # Files only; no display on a server.
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402


@dataclasses.dataclass
class StudyResult:
    """`records`: one dict per run (seed); `summary`: mean ± std per group;
    `table`: markdown; `plots`: PNG paths; `notes`: what the numbers mean."""

    records: list[dict]
    summary: list[dict]
    table: str
    plots: list[str]
    notes: str = ""


def summarise(records: list[dict], group_keys: tuple[str, ...], metrics: tuple[str, ...]):
    """Groups records by `group_keys` (first-seen order) and gives each metric's
    mean, standard deviation (population, as numpy) and count over the group."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(tuple(record[k] for k in group_keys), []).append(record)
    summary = []
    for key, members in groups.items():
        row = dict(zip(group_keys, key, strict=True))
        for metric in metrics:
            values = [m[metric] for m in members if m.get(metric) is not None]
            if values:
                row[metric] = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values)),
                    "n": len(values),
                }
        summary.append(row)
    return summary


def cell(value, percent: bool = True) -> str:
    """A table cell: 'mean ± std' (× 100 for accuracies), or the value itself."""
    if isinstance(value, dict):
        scale = 100.0 if percent else 1.0
        text = f"{scale * value['mean']:.2f}"
        return text + (f" ± {scale * value['std']:.2f}" if value["n"] > 1 else "")
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown_table(summary: list[dict], columns: dict[str, str], percent=()) -> str:
    """`columns`: key → header. Keys listed in `percent` are shown in %."""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for row in summary:
        cells = [cell(row.get(k, "—"), percent=k in percent) for k in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def line_plot(path, summary, *, x: str, y: str, series: str, xlabel: str, ylabel: str, logx=True):
    """One line per `series` value: mean of `y` against `x`, std as error bars."""
    figure, axes = plt.subplots(figsize=(5, 3.6))
    for name in dict.fromkeys(row[series] for row in summary):
        rows = sorted((r for r in summary if r[series] == name and y in r), key=lambda r: r[x])
        xs = [r[x] for r in rows]
        axes.errorbar(
            xs,
            [100 * r[y]["mean"] for r in rows],
            yerr=[100 * r[y]["std"] for r in rows],
            marker="o",
            capsize=3,
            label=str(name),
        )
    if logx:
        axes.set_xscale("log")
        # Ticks at the measured values, written plainly: a log axis spanning
        # less than a decade otherwise labels its minor ticks on top of each other.
        ticks = sorted({row[x] for row in summary})
        axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if len(ticks) <= 8:
            axes.set_xticks(ticks, [f"{t:g}" for t in ticks])
        else:  # Too many values to label: 1-2-5 steps, written the same way.
            axes.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda t, _: f"{t:g}"))
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def metric_line_plots(
    path_prefix: str, summary, metrics: dict[str, str], *, x: str, series: str, xlabel: str
) -> list[str]:
    """One `line_plot` per metric (name → legend), saved as PREFIX_METRIC.png."""
    return [
        line_plot(
            f"{path_prefix}_{metric}.png",
            summary,
            x=x,
            y=metric,
            series=series,
            xlabel=xlabel,
            ylabel=f"{legend} accuracy (%)",
        )
        for metric, legend in metrics.items()
    ]


def bar_plot(path, summary, *, category: str, metrics: dict[str, str], ylabel: str):
    """Grouped bars: one group per `category` value, one bar per metric (key → legend)."""
    figure, axes = plt.subplots(figsize=(6.5, 4))
    positions = np.arange(len(summary))
    width = 0.8 / len(metrics)
    for i, (metric, legend) in enumerate(metrics.items()):
        means = [100 * r[metric]["mean"] if metric in r else np.nan for r in summary]
        stds = [100 * r[metric]["std"] if metric in r else 0.0 for r in summary]
        axes.bar(positions + i * width, means, width, yerr=stds, capsize=3, label=legend)
    axes.set_xticks(positions + width * (len(metrics) - 1) / 2)
    # Long variant names ("fine-tuned from Fashion-MNIST") wrap instead of overlapping.
    axes.set_xticklabels([textwrap.fill(str(r[category]), 14) for r in summary], fontsize=7)
    axes.set_ylabel(ylabel)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def digits_accuracy_by_method(records: list[dict], plot_path: str, method_label: str):
    """Summary, markdown table and bar plot of digits test accuracy per method:
    the report of the studies that end in transfer to digits."""
    summary = summarise(records, ("method",), ("digits_accuracy",))
    table = markdown_table(
        summary,
        {"method": method_label, "digits_accuracy": "digits test accuracy"},
        percent=("digits_accuracy",),
    )
    plot = bar_plot(
        plot_path,
        summary,
        category="method",
        metrics={"digits_accuracy": "digits test"},
        ylabel="accuracy (%)",
    )
    return summary, table, plot


def _save(figure, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def git_revision() -> str:
    """HEAD's hash, with '+dirty' when tracked code (vit_jax/, configs/,
    experiments/mini/) differs from it: the results would not come from that
    commit alone."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False
        ).stdout.strip()

    revision = git("rev-parse", "HEAD") or "unknown"
    code = ("vit_jax", "configs", "experiments/mini")  # Not README or results edits.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", *code)
    return revision + ("+dirty" if dirty else "")


def write(
    out_dir: str,
    study: str,
    result: StudyResult,
    *,
    command: str,
    setting,
    seconds: float,
    revision: str,
):
    """STUDY.json (everything) and STUDY.md (the table and how it was made);
    `revision` is git_revision() when the study started (it may span commits)."""
    os.makedirs(out_dir, exist_ok=True)
    meta = {
        "study": study,
        "command": command,
        "seeds": list(setting.seeds),
        "toy": setting.toy,
        "git_revision": revision,
        "wall_seconds": round(seconds, 1),
        # Training runs: planned, done, and of those reused from earlier invocations.
        "runs": {k: getattr(setting.progress, k) for k in ("planned", "done", "reused")},
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    json_path = os.path.join(out_dir, f"{study}.json")
    with open(json_path, "w") as f:
        json.dump(
            {**meta, "notes": result.notes, "summary": result.summary, "records": result.records},
            f,
            indent=1,
        )
    plots = "\n".join(
        f"![{os.path.basename(p)}]({os.path.relpath(p, out_dir)})" for p in result.plots
    )
    markdown = (
        f"# {study}\n\n{result.table}\n\n{result.notes}\n\n{plots}\n\n"
        f"Command: `{command}` · seeds {meta['seeds']} · revision `{meta['git_revision']}` · "
        f"{meta['wall_seconds'] / 60:.1f} min wall{' · TOY SIZE' if setting.toy else ''}\n"
    )
    md_path = os.path.join(out_dir, f"{study}.md")
    with open(md_path, "w") as f:
        f.write(markdown)
    return [json_path, md_path, *result.plots]
