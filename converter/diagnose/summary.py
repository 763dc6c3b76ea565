"""diagnosis.json in a few lines for the terminal."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def print_diagnosis(console: Console, diagnosis: dict, folder: Path) -> None:
    say = lambda text, style=None: console.print(text, markup=False, style=style)  # noqa: E731
    failure = diagnosis["failure"]
    if failure is None:
        say(f"no failure: {diagnosis['model']} builds for {diagnosis['target']} as {diagnosis['dtype']} within the "
            "gate against ONNX Runtime")
        return
    where = f" during {failure['phase']}" if failure["phase"] else ""
    say(f"failure: {failure['kind']} ({failure['detail']}){where}: {failure['meaning']}")
    departed = diagnosis.get("departure")
    if departed:
        say(f"first departure from ONNX Runtime: layer #{departed['index']} {departed['layer']} ({departed['op']}; ONNX "
            f"{', '.join(departed['onnx_nodes'][-3:])}): cosine {departed['cosine']:.4f}, golden cosine "
            f"{departed['golden_cosine']:.4f}")
        say(f"  {departed['cause']}: {departed['meaning']}")
    reduction = diagnosis["reduction"]
    if "skipped" in reduction:
        say(f"not reduced: {reduction['skipped']}")
    else:
        say(f"reduced: {reduction['nodes_before']} -> {reduction['nodes_after']} nodes in {reduction['builds']} toolkit "
            f"builds, {reduction['minutes']:.1f} min ({reduction['method']}); the repro fails as: "
            f"{diagnosis['repro']['failure']['kind']} ({diagnosis['repro']['failure']['detail']})")
    known = diagnosis["known"]
    if known:
        say(f"known failure {known['id']}: {known['title']}")
        say(f"fix: {known['remedy_text']}", "bold")
    else:
        say(f"unknown: no entry of {diagnosis['catalogue']} matches; report it upstream with the repro")
    say(f"repro: {folder / diagnosis['repro']['onnx']}  (cd {folder} && python repro.py)")
    for line in diagnosis["repro"]["log_tail"][-3:]:
        say(f"  {line[:160]}", "dim")
    say(f"details: {folder / 'diagnosis.json'}")
