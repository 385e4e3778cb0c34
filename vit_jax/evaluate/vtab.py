"""The VTAB-1k table (the paper's Sec. 4.1, Table 2, Fig. 2): per-task test
accuracies aggregated into Natural / Specialized / Structured / mean.

The VTAB score is the mean over all tasks; the group columns are the means
within each group. The sweep that fine-tunes and tests each task is
experiments/vtab.py.
"""

import numpy as np

GROUP_TITLES = {"natural": "Natural", "specialized": "Specialized", "structured": "Structured"}


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
