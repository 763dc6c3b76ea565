"""The board runner's `--simulate BUILD_DIR` on the host: the bundle's UNet in the toolkit's simulator.

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
from converter.release.manifest import file_chunks, runs, sha256


@contextmanager
def in_simulator(build_dir: Path, manifest: dict):
    """unet(feed) -> output, the feed holding the graph's inputs by name."""
    build = FinishedBuild.open(build_dir, "simulate with the build folder the bundle was released from")
    artifacts = build.artifacts
    names = [run["rknn"] for run in runs(manifest)]
    if len(artifacts) != len(names) or any(not a.is_file() or sha256(file_chunks(a)) != manifest["files"][n]["sha256"]
                                           for a, n in zip(artifacts, names)):
        raise UserError(f"{build_dir}: its .rknn {'files are' if len(names) > 1 else 'is'} not this bundle's "
                        f"{', '.join(names)}; simulate with the build folder the bundle was released from")
    with tempfile.TemporaryDirectory(prefix="rkconvert-simulate-") as scratch, \
            rebuilt_simulator(build.model(), build_dir / "logs" / "rknn-board-simulate.log", None,
                              Path(scratch)) as infer:
        yield lambda feed: infer([feed])[0][0]
