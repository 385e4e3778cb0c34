"""What a study writes: per-seed records → mean ± sample-std rows → JSON, a
markdown table and PNG plots, stamped with the command, seeds, git revision,
the claim the study tests and the verdict its rule printed."""

import dataclasses
import json
import os
import textwrap
import time

import matplotlib

matplotlib.use("Agg")  # Files only; no display on a server.
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from experiments import machine  # noqa: E402
from experiments.mini import evidence, provenance  # noqa: E402

STD_LABEL = "mean ± sample std (ddof=1) over seeds"


@dataclasses.dataclass
class StudyResult:
    """`records`: one dict per run (seed); `summary`: mean ± sample std per
    group; `table`: markdown; `plots`: PNG paths; `notes`: what the numbers
    mean and what they cannot show; `verdict`: what the study's rule printed."""

    records: list[dict]
    summary: list[dict]
    table: str
    plots: list[str]
    notes: str = ""
    verdict: evidence.Verdict | None = None


def summarise(records: list[dict], group_keys: tuple[str, ...], metrics: tuple[str, ...]):
    """Groups records by `group_keys` (first-seen order) and gives each metric's
    mean, sample standard deviation (ddof=1; None for one value) and count."""
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
                    "sample_std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                    "n": len(values),
                }
        summary.append(row)
    return summary


def cell(value, percent: bool = True) -> str:
    """A table cell: 'mean ± sample std' (× 100 for accuracies), or the value itself."""
    if isinstance(value, dict):
        scale = 100.0 if percent else 1.0
        text = f"{scale * value['mean']:.2f}"
        std = value.get("sample_std")
        return text + (f" ± {scale * std:.2f}" if std is not None else "")
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown_table(summary: list[dict], columns: dict[str, str], percent=()) -> str:
    """`columns`: key → header. Keys listed in `percent` are shown in %; cells
    holding a summary are its mean ± sample std, and the line above the table
    says so with the number of seeds."""
    counts = sorted({v["n"] for row in summary for v in row.values() if isinstance(v, dict)})
    caption = f"{STD_LABEL}, n={'/'.join(map(str, counts))}\n\n" if counts else ""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for row in summary:
        cells = [cell(row.get(k, "—"), percent=k in percent) for k in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return caption + "\n".join(lines)


def line_plot(path, summary, *, x: str, y: str, series: str, xlabel: str, ylabel: str, logx=True):
    """One line per `series` value: mean of `y` against `x`, sample std as error bars."""
    figure, axes = plt.subplots(figsize=(5, 3.6))
    for name in dict.fromkeys(row[series] for row in summary):
        rows = sorted((r for r in summary if r[series] == name and y in r), key=lambda r: r[x])
        xs = [r[x] for r in rows]
        axes.errorbar(
            xs,
            [100 * r[y]["mean"] for r in rows],
            yerr=[100 * (r[y]["sample_std"] or 0.0) for r in rows],
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
        stds = [100 * (r[metric]["sample_std"] or 0.0) if metric in r else 0.0 for r in summary]
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


def write(
    out_dir: str,
    study: str,
    module,
    result: StudyResult,
    *,
    command: str,
    setting,
    seconds: float,
    training_seconds: float,
    revision: str,
):
    """STUDY.json (everything, the claim and the verdict included) and STUDY.md
    (the claim, the verdict, the table and how it was made). `module` is the
    study's (TITLE, CLAIM, COST); `revision` is provenance.code_revision() when
    the study started; `seconds` this invocation's wall time, `training_seconds`
    the study's runs' own (runs.training_seconds)."""
    os.makedirs(out_dir, exist_ok=True)
    meta = {
        "study": study,
        "title": module.TITLE,
        "command": command,
        "seeds": list(setting.seeds),
        "toy": setting.toy,
        "git_revision": revision,
        "wall_seconds": round(seconds, 1),  # This invocation's.
        # Every training run's own time, over all the invocations that trained
        # it (a study resumed across several invocations is not undercounted).
        "training_seconds": round(training_seconds, 1),
        "cost_estimate": module.COST,
        # Training runs: planned, done, and of those reused from earlier invocations.
        "runs": {k: getattr(setting.progress, k) for k in ("planned", "done", "reused")},
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        # Every run's too: records are read only on the processor that made them.
        "hardware": machine.hardware(),
    }
    claim = module.CLAIM.to_json()
    verdict = result.verdict.to_json()
    json_path = os.path.join(out_dir, f"{study}.json")
    with open(json_path, "w") as f:
        json.dump(
            {
                **meta,
                "claim": claim,
                "verdict": verdict,
                "table": result.table,
                "notes": result.notes,
                "plots": [os.path.relpath(p, out_dir) for p in result.plots],
                "summary": result.summary,
                "records": result.records,
            },
            f,
            indent=1,
        )
    plots = "\n".join(
        f"![{os.path.basename(p)}]({os.path.relpath(p, out_dir)})" for p in result.plots
    )
    findings = "\n".join(f"- {line}" for line in verdict["findings"])
    markdown = (
        f"# {module.TITLE}\n\n"
        f'Claim ({claim["source"]}): "{claim["quote"]}"\n\n'
        f"Compared here: {claim['comparison']}\n\nRule: {claim['rule']}\n\n"
        f"**Verdict: {verdict['verdict']}**\n\n{findings}\n\n"
        f"{result.table}\n\n{result.notes}\n\n{plots}\n\n"
        f"{provenance.made_by(meta)}\n"
    )
    md_path = os.path.join(out_dir, f"{study}.md")
    with open(md_path, "w") as f:
        f.write(markdown)
    return [json_path, md_path, *result.plots]
