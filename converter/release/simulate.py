"""The board runner's `--simulate BUILD_DIR` on the host: the bundle's models in the toolkit's simulator.
run.py finds this module by the entry point rkconvert.board:simulator (setup.cfg), so the runner imports
nothing of rkconvert by name.

The simulator cannot run a `.rknn` file, only a model the toolkit has just built, so the build folder
the bundle came from is rebuilt as the images stage rebuilds it (and checked against the build's own
check output); the build's `.rknn` must be the bundle's, byte for byte.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from converter.board.manifest import ForSize, Manifest
from converter.builds.finished import FinishedBuild
from converter.builds.simulator import rebuilt_simulator
from converter.common.errors import BuildFailed, UserError

THEN = "simulate with the build folder the bundle was released from"
ERRORS = (UserError, BuildFailed)  # one line each, which the runner prints as its own


@contextmanager
def in_simulator(build_dir: Path, bundle: Manifest, one: ForSize, model: str | None = None):
    """infer(feed) -> the first output, the feed holding the graph's inputs by name: the UNet, or the pipeline
    model `model` (text_encoder, vae_decoder) the bundle runs on the NPU, at the size `one`."""
    ran = one.runs() if model is None else [one.npu_models()[model]]
    made_in = one.build if model is None else ran[0].build
    build = FinishedBuild.open(build_dir / (made_in or ""), THEN)  # a bundle of several sizes: one of them
    if model is not None:
        if model not in build.npu_models:
            raise UserError(f"{build_dir}: built without its {model} for the NPU; {THEN}")
        build = build.npu_models[model]
    names = [run.rknn for run in ran]
    if build.artifact_sha256() != [bundle.files[n].sha256 for n in names]:
        raise UserError(f"{build.folder}: its .rknn {'files are' if len(names) > 1 else 'is'} not this bundle's "
                        f"{', '.join(names)}; {THEN}")
    with tempfile.TemporaryDirectory(prefix="rkconvert-simulate-") as scratch, \
            rebuilt_simulator(build.model(), build.folder / "logs" / "rknn-board-simulate.log", None,
                              Path(scratch)) as infer:
        yield lambda feed: infer([feed])[0][0]
