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
    if departed and "method" in departed:
        _estimated(say, departed)  # no repro: nothing was cut out to build on its own
        say(f"not reduced: {diagnosis['reduction']['skipped']}")
        say(f"details: {folder / 'diagnosis.json'}")
        return
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
        if reduction.get("stopped"):
            say(f"  not reduced further: {reduction['stopped']}", "yellow")
        if reduction.get("candidate_errors"):
            say(f"  {reduction['candidate_errors']} candidates could not be checked, taken as not failing; the "
                f"first: {reduction['first_candidate_error']}", "yellow")
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


def _estimated(say, departed: dict) -> None:
    """A departure estimated from stage sensitivity (estimated_departure.py): no layer was dumped."""
    failing, ranked = departed["failing_alone"], departed["ranked"]
    which = (f"the first in the graph of {failing} of {ranked} quantized tensors that would fail the gate alone"
             if failing else f"none of {ranked} quantized tensors would fail the gate alone: the costliest")
    tensor = "" if departed["onnx_tensor"] == departed["layer"] else f", ONNX {departed['onnx_tensor']}"
    say(f"first departure (estimated; {which}): {departed['layer']} ({departed['op']}{tensor}): "
        f"{departed['alone_db']:.1f} dB with it alone in int8")
    emulated = departed["emulated_db"]
    simulated = f"the simulator: {departed['simulated_db']:.1f} dB"
    say(f"  every activation in int8, emulated: {emulated:.1f} dB; {simulated}" if emulated is not None
        else f"  {simulated}")
    say(f"  {departed['cause']}: {departed['meaning']}")
    shares = ", ".join(f"{r['tensor']} {r['share']:.0%}" for r in departed["costliest"])
    say(f"costliest (share of the int8 noise): {shares}")
