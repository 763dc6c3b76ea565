"""The values a graph's tensors take on each recorded feed, each computed once by ONNX Runtime.

A subgraph cut out of a failing graph takes tensors from inside it as inputs (the cut moves them as it
shrinks), and folds tensors computed from constants alone into its own constants. Both need the values
those tensors take in place: ONNX Runtime runs the whole graph with them marked as outputs the first
time a name is asked for, and every value is kept on disk (an attention's scores at full size are
hundreds of MB) for every later candidate that asks again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converter.common import onnx_runtime


class TensorStore:
    def __init__(self, source: Path, feeds: list[str], folder: Path):
        """`source`: the whole graph; `feeds`: .npz of its inputs, one per recorded feed; values kept in `folder`."""
        self.source, self.feeds, self.folder = source, feeds, folder
        self._files: list[dict[str, Path]] = [{} for _ in feeds]
        self._given: list[set[str]] = []
        for npz in feeds:
            with np.load(npz) as data:
                self._given.append(set(data.files))

    def __len__(self) -> int:
        return len(self.feeds)

    def values(self, names: list[str], feed: int = 0) -> dict[str, np.ndarray]:
        """The tensors `names` on feed number `feed`."""
        wanted = list(dict.fromkeys(names))
        with np.load(self.feeds[feed]) as data:
            given = {n: data[n] for n in wanted if n in self._given[feed]}
            missing = [n for n in wanted if n not in given and n not in self._files[feed]]
            if missing:
                self._compute(feed, missing, dict(data))
        return {n: given[n] if n in given else np.load(self._files[feed][n]) for n in wanted}

    def _compute(self, feed: int, names: list[str], inputs: dict[str, np.ndarray]) -> None:
        folder = self.folder / str(feed)
        folder.mkdir(parents=True, exist_ok=True)
        computed = onnx_runtime.run_with_tensors(self.source, inputs, names, self.folder / "ort")
        for name in names:
            path = folder / f"{len(self._files[feed])}.npy"
            np.save(path, computed[name])
            self._files[feed][name] = path
