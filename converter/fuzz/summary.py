"""A fuzz campaign in the terminal: a line per trial as it ends, then the distinct failures."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from converter.fuzz.trial import Trial


def print_trial(console: Console, trial: Trial, key: str | None) -> None:
    head = f"seed {trial.seed} {trial.dtype} ({trial.nodes} nodes, {trial.seconds:.0f} s)"
    if trial.error:
        console.print(f"{head}: error of rkconvert's own: {trial.error} ({trial.folder})", markup=False, style="red")
    elif trial.failure:
        failure = trial.failure
        console.print(f"{head}: {failure['kind']} ({failure['detail'][:100]}) during {failure['phase']} "
                      f"-> corpus/{key}", markup=False, style="yellow")
    else:
        console.print(f"{head}: built", markup=False, style="dim")


def print_summary(console: Console, summary: dict, out: Path) -> None:
    say = lambda text, style=None: console.print(text, markup=False, style=style)  # noqa: E731
    say(f"{summary['graphs']} graphs, {summary['trials']} builds ({', '.join(summary['dtypes'])} for "
        f"{summary['target']}, toolkit {summary['toolkit_version']}) in {summary['minutes']} min: "
        f"{summary['failed_trials']} failed, {summary['failures']} distinct failures, {summary['diagnosed']} "
        f"diagnosed, {summary['diagnose_errors']} diagnose errors, {summary['probe_errors']} probe errors")
    for c in summary["classes"]:
        sig = c["signature"]
        known = f"known: {c['known']}" if c["known"] else "unknown"
        what = " ".join(filter(None, (sig["kind"], f"during {sig['phase']}", sig["message"],
                                      sig["last_rule"] and f"(last rule {sig['last_rule']})")))
        say(f"  {c['key']}  {what}: {len(c['trials'])} trials, repro {c['repro_nodes']} nodes, {known}")
    for e in summary["errors"]:
        say(f"  error {e['trial']}: {e['error']}", "red")
    say(f"corpus: {out / 'corpus'}  summary: {out / 'summary.json'}")
