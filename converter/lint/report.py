"""The terminal table of `rkconvert lint`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from converter.lint.check import LintResult
from targets.chip import Chip


def print_lint(console: Console, result: LintResult, chip: Chip, passes: list[str]) -> None:
    remaining = {f.key() for f in result.remaining}
    rows = result.before + [f for f in result.remaining if f.key() not in {b.key() for b in result.before}]
    if not rows:
        console.print(f"Nothing {chip.name} would refuse, run on the CPU, crash on or convert wrongly "
                      f"(passes: {', '.join(passes) or 'none'}).")
        return
    table = Table(title=f"rkconvert lint for {chip.name} (passes: {', '.join(passes) or 'none'})",
                  title_justify="left")
    for heading in ("node", "op", "kind", "problem", "status"):
        table.add_column(heading, overflow="fold")
    for f in rows:
        if f.key() in remaining:
            status = "[red]NO FIX[/]" + (f" in this list; {f.fix} fixes it" if f.fix and f.fix not in passes else "")
        else:
            status = f"[green]fixed by {result.fixed_by.get(f.key(), '?')}[/]"
        table.add_row(f.node, f.op, f.kind, f.problem, status)
    console.print(table)
    console.print(f"{len(result.before)} finding(s) in the exported graph, {len(result.remaining)} left after the passes.")
