"""Which code made a result, and whether it is still today's code.

A study's JSON records `git_revision`: the commit the run started from, with
'+dirty' when the code in the working tree differed from it. The code is
CODE_PATHS: the library, the configs and the experiments, less the results
and the markdown beside them (a README rewritten after a run does not change
what ran). `python -m experiments.mini check` runs `check_results`.
"""

import dataclasses
import hashlib
import json
import os
import subprocess

CODE_PATHS = (
    "vit_jax",
    "configs",
    "experiments",
    ":(exclude)experiments/results",
    ":(exclude,glob)**/*.md",
)
DIRTY = "+dirty"
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _git(root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


def code_revision(root: str) -> str:
    """HEAD's hash, with '+dirty' when a tracked or untracked (not ignored)
    file under CODE_PATHS differs from it; 'unknown' outside a git tree."""
    head = _git(root, "rev-parse", "HEAD").stdout.strip()
    if not head:
        return "unknown"
    changed = _git(root, "status", "--porcelain", "--", *CODE_PATHS).stdout.strip()
    return head + (DIRTY if changed else "")


def code_fingerprint(root: str) -> str:
    """A hash of the files under CODE_PATHS as they are in the working tree
    (tracked and untracked, not ignored), whether committed or not. A study's
    training runs are cached under it, so a run made by other code is never
    reused."""
    names = _git(
        root, "ls-files", "--cached", "--others", "--exclude-standard", "--", *CODE_PATHS
    ).stdout.split("\n")
    digest = hashlib.sha1()
    for name in sorted(set(filter(None, names))):
        path = os.path.join(root, name)
        if os.path.isfile(path):  # A deleted tracked file is still listed.
            with open(path, "rb") as f:
                digest.update(f"{name}\0{hashlib.sha1(f.read()).hexdigest()}\n".encode())
    return digest.hexdigest()[:10]


def made_by(result: dict, revision_digits: int = 40) -> str:
    """The line under a result that says what made it: the command, seeds,
    revision, wall and training time, date and machine (the last three only
    where the JSON records them)."""
    revision = result.get("git_revision", "unknown")
    short = revision.removesuffix(DIRTY)[:revision_digits] + (
        DIRTY if revision.endswith(DIRTY) else ""
    )
    parts = [
        f"Command: `{result.get('command', '?')}`",
        f"seeds {result.get('seeds', [])}",
        f"revision `{short}`",
        f"{result.get('wall_seconds', 0) / 60:.1f} min wall",
    ]
    if "training_seconds" in result:
        parts.append(f"{result['training_seconds'] / 60:.1f} min of training")
    if "hardware" in result:
        hardware = result["hardware"]
        parts += [result["finished"], f"{hardware['cpu']}, {hardware['cores']} cores"]
    if result.get("toy"):
        parts.append("TOY SIZE")
    return " · ".join(parts)


def changed_code(root: str, revision: str) -> list[str]:
    """Files under CODE_PATHS that differ between `revision` and HEAD."""
    out = _git(root, "diff", "--name-only", revision, "HEAD", "--", *CODE_PATHS).stdout
    return sorted(line for line in out.splitlines() if line)


@dataclasses.dataclass(frozen=True)
class Status:
    study: str
    ok: bool
    line: str  # "study: ok (revision abc1234)", "study: stale: ...", ...


def check_study(root: str, study: str, json_path: str) -> Status:
    """ok when the JSON is a full-size run from a clean revision that exists
    and whose code is HEAD's code; otherwise the first reason it is not."""

    def failed(reason: str) -> Status:
        return Status(study, False, f"{study}: {reason}")

    if not os.path.exists(json_path):
        return failed(f"missing ({os.path.relpath(json_path, root)})")
    with open(json_path) as f:
        result = json.load(f)
    if result.get("toy"):
        return failed("toy size (python -m experiments.mini ... --toy): not a result")
    recorded = result.get("git_revision", "")
    revision = recorded.removesuffix(DIRTY)
    if not revision or revision == "unknown":
        return failed("no git revision recorded")
    if _git(root, "cat-file", "-e", f"{revision}^{{commit}}").returncode != 0:
        return failed(f"revision {revision[:12]} does not exist in this repository")
    if recorded.endswith(DIRTY):
        return failed(f"dirty: run from uncommitted changes on top of {revision[:12]}")
    changed = changed_code(root, revision)
    if changed:
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        return failed(f"stale: code changed since {revision[:12]}: {', '.join(changed[:6])}{more}")
    if "verdict" not in result:
        return failed("no verdict recorded: not written by python -m experiments.mini")
    return Status(study, True, f"{study}: ok (revision {revision[:12]})")


def check_results(root: str, results_dir: str, studies) -> list[Status]:
    return [
        check_study(root, study, os.path.join(results_dir, f"{study}.json")) for study in studies
    ]
