"""The board runner's `--simulate BUILD_DIR` on the host: the bundle's models in the toolkit's simulator.

The simulator cannot run a `.rknn` file, only a model the toolkit has just built, so the build folder
the bundle came from is rebuilt as the images stage rebuilds it (and checked against the build's own
check output); the build's `.rknn` must be the bundle's, byte for byte.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

from converter.common.errors import UserError
from converter.pipeline.finished import FinishedBuild
from converter.pipeline.simulator import rebuilt_simulator
from converter.release.manifest import file_chunks, npu_parts, runs, sha256

THEN = "simulate with the build folder the bundle was released from"


@contextmanager
def in_simulator(build_dir: Path, manifest: dict, part: str | None = None):
    """infer(feed) -> the first output, the feed holding the graph's inputs by name: the UNet, or the pipeline
    part `part` (text_encoder, vae_decoder) the bundle runs on the NPU (`manifest`: as the runner reads it for
    the size it draws)."""
    ran = runs(manifest) if part is None else [npu_parts(manifest)[part]]
    made_by = manifest if part is None else ran[0]
    build = FinishedBuild.open(build_dir / made_by.get("build", ""), THEN)  # a bundle of several sizes: one of them
    if part is not None:
        if part not in build.npu_parts:
            raise UserError(f"{build_dir}: built without its {part} for the NPU; {THEN}")
        build = build.npu_parts[part]
    names = [run["rknn"] for run in ran]
    artifacts = build.artifacts
    if len(artifacts) != len(names) or any(not a.is_file() or sha256(file_chunks(a)) != manifest["files"][n]["sha256"]
                                           for a, n in zip(artifacts, names)):
        raise UserError(f"{build.folder}: its .rknn {'files are' if len(names) > 1 else 'is'} not this bundle's "
                        f"{', '.join(names)}; {THEN}")
    with tempfile.TemporaryDirectory(prefix="rkconvert-simulate-") as scratch, \
            rebuilt_simulator(build.model(), build.folder / "logs" / "rknn-board-simulate.log", None,
                              Path(scratch)) as infer:
        yield lambda feed: infer([feed])[0][0]
