"""The studies' text in README.md and experiments/README.md, written from the
results JSON alone, so that the text and the JSON cannot drift.

Each file holds its part between two markers (SECTIONS); `rewrite` replaces
what lies between them (`python -m experiments.mini report`) and `drifted`
names the files whose text is not what the JSON gives (`... check`).

A JSON of the current design carries the claim, the rule and the verdict the
rule printed, and the text repeats them. A JSON of an earlier design (no
verdict recorded) is shown as such: its numbers, with the sample std (ddof=1)
recomputed from its per-seed records, and no verdict.
"""

import importlib
import json
import os

import numpy as np

from experiments.mini import STUDIES, provenance

BEGIN, END = (
    "<!-- mini-studies:{} begin (python -m experiments.mini report) -->",
    ("<!-- mini-studies:{} end -->"),
)
# file (relative to the repository root) → the marker name of its section.
SECTIONS = {"README.md": "summary", "experiments/README.md": "results"}
RESULTS_LINK = {"README.md": "experiments/results", "experiments/README.md": "results"}
PREVIOUS = "previous design"


def load(results_dir: str) -> dict[str, dict | None]:
    """study → its JSON (None when missing), in STUDIES order."""
    loaded = {}
    for study in STUDIES:
        path = os.path.join(results_dir, f"{study}.json")
        loaded[study] = json.load(open(path)) if os.path.exists(path) else None
    return loaded


def _verdict(result: dict | None) -> str:
    if result is None:
        return "not run"
    if "verdict" not in result:
        return f"— ({PREVIOUS}; no verdict until the re-run)"
    return result["verdict"]["verdict"]


def study_claim(study: str) -> dict:
    """The claim `study`'s module states, as its JSON records it."""
    return importlib.import_module(f"experiments.mini.{study}").CLAIM.to_json()


def summary_section(results: dict[str, dict | None], link: str) -> str:
    """README.md's table: one row per study, its claim's source and verdict."""
    lines = ["| study | the paper | verdict here (printed by the study's rule) |", "|---|---|---|"]
    for number, (study, result) in enumerate(results.items(), start=1):
        # The claim the study's code states now (an earlier JSON recorded none).
        claim = result["claim"] if result and "claim" in result else study_claim(study)
        paper = f"{claim['source']}: “{claim['quote']}”"
        lines.append(f"| {number} [{study}]({link}/{study}.md) | {paper} | {_verdict(result)} |")
    return "\n".join(lines)


def _value_cell(values: list[float], scale: float) -> str:
    if not values:
        return "—"
    text = f"{scale * np.mean(values):.2f}"
    if len(values) > 1:
        text += f" ± {scale * np.std(values, ddof=1):.2f}"
    return text


def recomputed_table(result: dict) -> str:
    """An earlier design's summary rows, their numbers recomputed from the
    per-seed records: mean ± sample std (ddof=1), with n per row."""
    summary, records = result.get("summary") or [], result.get("records") or []
    if not summary:
        return "(no summary recorded)"
    metrics = [k for k, v in summary[0].items() if isinstance(v, dict)]
    keys = [k for k, v in summary[0].items() if not isinstance(v, dict)]
    keys = [k for k in keys if records and k in records[0]]  # Drop derived marks.
    lines = [
        "| " + " | ".join([*keys, *metrics, "n"]) + " |",
        "|" + "---|" * (len(keys) + len(metrics) + 1),
    ]
    for row in summary:
        members = [r for r in records if all(r.get(k) == row.get(k) for k in keys)]
        cells = [str(row.get(k)) for k in keys]
        for metric in metrics:
            values = [float(r[metric]) for r in members if r.get(metric) is not None]
            scale = 100.0 if all(0 <= v <= 1 for v in values) else 1.0
            cells.append(_value_cell(values, scale))
        cells.append(str(len(members)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _records_table(records: list[dict]) -> str:
    keys = [k for k in records[0] if not isinstance(records[0][k], (list, dict))]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for record in records:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in map(record.get, keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def study_section(number: int, study: str, result: dict | None, link: str) -> str:
    """experiments/README.md's part for one study."""
    if result is None:
        return f"**{number}. {study}**: not run yet (`python -m experiments.mini {study}`)."
    made = provenance.made_by(result, revision_digits=12)
    if "verdict" not in result:
        has_stats = any(isinstance(v, dict) for v in (result.get("summary") or [{}])[0].values())
        if has_stats:
            table, how = (
                recomputed_table(result),
                (
                    "Mean ± sample std (ddof=1), recomputed from the per-seed records; "
                    "n seeds per row."
                ),
            )
        else:
            table, how = _records_table(result["records"]), "One seed: the records as written."
        return "\n\n".join(
            [
                f"**{number}. {study}** ([table]({link}/{study}.md)): from the {PREVIOUS} of "
                "this study, kept for its numbers until the re-run. No verdict: the study's "
                f"rule has not run on these numbers. {how}",
                table,
                f"What ran: {result.get('notes', '')}",
                made,
            ]
        )
    claim, verdict = result["claim"], result["verdict"]
    findings = "\n".join(f"- {line}" for line in verdict["findings"])
    plots = "\n".join(f"![{os.path.basename(p)}]({link}/{p})" for p in result.get("plots", []))
    parts = [
        f"**{number}. {result.get('title', study)}** ([table]({link}/{study}.md)) — paper "
        f'({claim["source"]}): "{claim["quote"]}"',
        f"Compared here: {claim['comparison']}",
        f"Rule: {claim['rule']}",
        f"**Verdict: {verdict['verdict']}**\n\n{findings}",
        result["table"],
        result.get("notes", ""),
        plots,
        f"{made} · cost estimate: {result.get('cost_estimate', '?')}",
    ]
    return "\n\n".join(part for part in parts if part)


def results_section(results: dict[str, dict | None], link: str) -> str:
    return "\n\n".join(
        study_section(number, study, result, link)
        for number, (study, result) in enumerate(results.items(), start=1)
    )


def render(file: str, results: dict[str, dict | None]) -> str:
    link = RESULTS_LINK[file]
    if SECTIONS[file] == "summary":
        return summary_section(results, link)
    return results_section(results, link)


def _span(text: str, name: str, file: str) -> tuple[int, int]:
    begin, end = BEGIN.format(name), END.format(name)
    if text.count(begin) != 1 or text.count(end) != 1:
        raise SystemExit(f"{file}: needs exactly one {begin!r} and one {end!r} line.")
    return text.index(begin) + len(begin), text.index(end)


def rewrite_previous_design(results_dir: str, results: dict[str, dict | None]) -> None:
    """STUDY.md of each earlier-design JSON: its section of experiments/README.md
    (the numbers with sample stds, no verdict), in place of the table it was
    written with."""
    for number, (study, result) in enumerate(results.items(), start=1):
        if result is not None and "verdict" not in result:
            with open(os.path.join(results_dir, f"{study}.md"), "w") as f:
                f.write(f"# {study}\n\n" + study_section(number, study, result, ".") + "\n")


def rewrite(root: str, results_dir: str) -> list[str]:
    """Writes every SECTIONS part from the JSON (and the earlier designs'
    STUDY.md); returns the files changed."""
    results, changed = load(results_dir), []
    rewrite_previous_design(results_dir, results)
    for file, name in SECTIONS.items():
        path = os.path.join(root, file)
        text = open(path).read()
        start, stop = _span(text, name, file)
        new = text[:start] + "\n" + render(file, results) + "\n" + text[stop:]
        if new != text:
            with open(path, "w") as f:
                f.write(new)
            changed.append(file)
    return changed


def drifted(root: str, results_dir: str) -> list[str]:
    """The SECTIONS files whose part is not what the JSON gives."""
    results, files = load(results_dir), []
    for file, name in SECTIONS.items():
        text = open(os.path.join(root, file)).read()
        start, stop = _span(text, name, file)
        if text[start:stop] != "\n" + render(file, results) + "\n":
            files.append(file)
    return files
