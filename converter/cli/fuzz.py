"""`rkconvert fuzz`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from converter.cli.groups import RAY
from targets import CHIPS


@click.command(epilog="Exit status: 0 no trial ended in an error of rkconvert's own (toolkit failures are what it "
                      "looks for), 1 some did, 2 bad input.")
@click.option("--target", type=click.Choice(sorted(CHIPS)), default="rk3588", show_default=True,
              help="The chip every graph is built for.")
@click.option("--dtype", "dtypes", multiple=True, metavar="DTYPE",
              help="Build each graph as this dtype (repeatable; default: float16). Float16 is judged at 40 dB "
                   "against ONNX Runtime, a quantized dtype at 20 dB.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Start no new trial after this long.")
@click.option("--graphs", type=click.IntRange(1), default=None, help="Stop after this many graphs (seeds).")
@click.option("--first-seed", type=click.IntRange(0), default=0, show_default=True,
              help="The first graph's seed; the next ones follow. A seed always makes the same graph.")
@click.option("--seeds", metavar="N,N,...", default=None,
              help="Only these seeds (say, the ones a campaign found failing, to see them matched after the catalogue "
                   "grew); --first-seed and --graphs are then ignored.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for corpus/, trials/, trials.jsonl and summary.json (default: build/fuzz-<target>/).")
@click.option("--known-failures", "catalogue", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None,
              help="Catalogue to match failures against (default: converter/toolkit/known_failures.toml).")
@RAY
def fuzz(target, dtypes, minutes, graphs, first_seed, seeds, out, catalogue, ray_address):
    """Find the toolkit's failures before a user does: seeded random small graphs made of the operator patterns
    diffusion models use (convolutions, GroupNorm and LayerNorm, SiLU and GELU, attention written as MatMul or
    Einsum with its scale and bias in different places, Resize in every mode, Split/Slice/Concat,
    Reshape/Transpose, Gemm, Softmax), each built for --target in the toolkit (a child process) and compared
    with ONNX Runtime. Every failure (crash, abort, error, no progress, accuracy) is diagnosed as `rkconvert
    diagnose` does: reduced to a repro that fails the same way and matched against the catalogue. Failures
    are filed by their repro's signature (class, call, message, the toolkit's last rewrite rule) in
    OUT/corpus/<key>/: repro.onnx, repro.py, diagnosis.json, the graph it came from, entry.json.
    """
    from converter.common.errors import UserError
    from converter.fuzz.campaign import Campaign, run_campaign
    from converter.fuzz.summary import print_summary, print_trial
    from converter.toolkit.known_failures import CATALOGUE, load
    from targets import get_chip

    chip = get_chip(target)
    dtypes = tuple(dict.fromkeys(dtypes or ("float16",)))
    for dtype in dtypes:
        if dtype not in chip.dtypes:
            raise UserError(f"--dtype {dtype}: {target} builds {', '.join(chip.dtypes)}")
    try:
        chosen = tuple(int(s) for s in seeds.split(",")) if seeds else ()
    except ValueError:
        chosen = (-1,)
    if any(seed < 0 for seed in chosen):
        raise UserError(f"--seeds {seeds}: expected seeds (whole numbers from 0) separated by commas")
    catalogue = catalogue or CATALOGUE
    load(catalogue)  # a malformed catalogue is refused before the first trial
    out = out or Path("build") / f"fuzz-{target}"
    console = Console(highlight=False, soft_wrap=True)
    campaign = Campaign(target, dtypes, out.resolve(), catalogue.resolve(), minutes * 60, graphs, first_seed, chosen)
    summary = run_campaign(campaign, ray_address, lambda trial, key: print_trial(console, trial, key))
    print_summary(console, summary, out)
    sys.exit(1 if summary["diagnose_errors"] or summary["probe_errors"] else 0)
