"""`rkconvert diagnose`."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console

from converter.builds.request import BuildRequest
from converter.cli.groups import BUILD_GROUPS, DIAGNOSE_GROUPS
from converter.cli.options import arguments, request_options


@click.command(epilog="Exit status: 0 no failure (with --apply: the fixed build passed), 1 a failure was diagnosed "
                      "(with --apply: and the fixed build failed, or there is no known fix), 2 bad input.")
@request_options(*DIAGNOSE_GROUPS)
@click.option("--budget", "budget_s", type=click.FloatRange(1), default=None, metavar="SECONDS",
              help="Stop a toolkit run after this long and call it no progress (default: 120 s plus 120 s per GB "
                   "of ONNX). Each candidate of the reduction gets the same budget, and the reduction 40 of them: "
                   "out of it, the smallest subgraph found failing so far is the repro.")
@click.option("--known-failures", "catalogue", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="Catalogue of known failures to match against (default: "
                                 "converter/toolkit/known_failures.toml).")
@click.option("--apply", "apply_fix", is_flag=True,
              help="When the failure is a known one, run the build with its fix (into the same --out, reusing its "
                   "stages) and show the result; exit status is then the build's.")
def diagnose(request: BuildRequest, budget_s: float | None, catalogue: Path | None, apply_fix: bool):
    """Find out why MODEL fails to build for --target, and what fixes it.

    Takes the same model, target, dtype and pass options as `build` and runs its stages up to the
    toolkit, then the toolkit alone (in a child process, under a time budget), and classifies the
    outcome: crash (signal), abort (heap corruption), refusal at config(), toolkit error, no progress,
    out of memory, or accuracy under --min-psnr. A crash, error or hang is reduced (bisecting the graph's
    outputs, then its inputs, then node by node; every candidate a toolkit build in a child process, its
    inputs the values they take in the whole graph) to the smallest subgraph that fails the same way, which
    is looked up in the catalogue of known
    failures: a match names its fix and the build command with it (--apply runs it). An accuracy failure
    is located with the per-layer report instead: the first layer that departs from ONNX Runtime
    (a toolkit rewrite, or quantization / float16 noise), and the smallest ring of nodes around it that
    fails the gate alone. A quantized graph built in parts (--parts auto: SD 1.5 as w8a8) has no per-layer
    report: the build's own stages probe it, part by part, and the departure is estimated from what quantizing
    each tensor alone costs at the output (stage sensitivity, the toolkit's own int8 scales). Writes
    --out/diagnosis/: diagnosis.json, repro.onnx, repro.py (rknn-toolkit2 alone: ready to report upstream)
    and the logs; a failed build's report.html links to it.
    """
    from converter.cli.build import run as run_build
    from converter.common.progress import Progress
    from converter.diagnose.diagnosis import DIAGNOSIS_DIR
    from converter.diagnose.diagnosis import diagnose as run_diagnose
    from converter.diagnose.remedy import remedied
    from converter.diagnose.summary import print_diagnosis
    from converter.toolkit.known_failures import CATALOGUE

    result = run_diagnose(request, Progress(Console(stderr=True, highlight=False)), budget_s, catalogue or CATALOGUE)
    console = Console(highlight=False, soft_wrap=True)
    print_diagnosis(console, result, request.out / DIAGNOSIS_DIR)
    if result["failure"] is None or result["known"] is None or "advice" in result["known"]["remedy"]:
        if apply_fix:
            console.print("--apply: nothing to apply", markup=False)
        sys.exit(0 if result["failure"] is None else 1)
    fixed = remedied(request, result["known"]["remedy"])
    command = shlex.join(["rkconvert", "build", *arguments(fixed, BUILD_GROUPS, leave_out=("rebuild",))])
    console.print(f"build with the fix: {command}", markup=False)
    if not apply_fix:
        sys.exit(1)
    run_build(replace(fixed, rebuild=False, command=command))  # a build that fails raises: exit 1 with its error
