"""Write a calibration set as it is recorded: one .npy per input per sample, RKNN's dataset file, and
calib.json with per-input statistics. Memory stays bounded: values for percentiles are a fixed-size
random subsample per input; everything else is running sums.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DATASET = "dataset.txt"
STATS = "calib.json"
PERCENTILES = (0.1, 1, 50, 99, 99.9)
RESERVOIR = 200_000  # values kept per input for percentiles


class _Running:
    def __init__(self, rng: np.random.Generator):
        self.rng, self.count, self.total, self.squares = rng, 0, 0.0, 0.0
        self.low, self.high = np.inf, -np.inf
        self.kept = np.empty(0, dtype=np.float32)

    def add(self, value: np.ndarray) -> None:
        flat = value.astype(np.float64).ravel()
        self.count += flat.size
        self.total += float(flat.sum())
        self.squares += float(flat @ flat)
        self.low, self.high = min(self.low, float(flat.min())), max(self.high, float(flat.max()))
        take = min(flat.size, max(1, RESERVOIR // 16))
        self.kept = np.concatenate([self.kept, self.rng.choice(flat, take, replace=False).astype(np.float32)])
        if self.kept.size > RESERVOIR:
            self.kept = self.rng.choice(self.kept, RESERVOIR, replace=False)

    def summary(self) -> dict:
        mean = self.total / self.count
        return {"min": self.low, "max": self.high, "mean": mean,
                "std": float(np.sqrt(max(self.squares / self.count - mean**2, 0.0))),
                "percentiles": {str(p): float(np.percentile(self.kept, p)) for p in PERCENTILES}}


class DatasetWriter:
    """Add samples (graph inputs, in the graph's input order) one at a time; `close()` writes the index."""

    def __init__(self, folder: Path, input_names: list[str], seed: int):
        self.folder, self.input_names = folder, input_names
        self.rng = np.random.default_rng(seed)
        self.lines: list[str] = []
        self.samples: list[dict] = []
        self.overall = {name: _Running(self.rng) for name in input_names}
        self.by_timestep: dict[float, dict[str, _Running]] = {}

    def add(self, feed: dict[str, np.ndarray], about: dict) -> None:
        index = len(self.samples)
        files = []
        per_t = self.by_timestep.setdefault(about["timestep"], {n: _Running(self.rng) for n in self.input_names})
        for name in self.input_names:
            file = f"{index:05d}-{name}.npy"
            np.save(self.folder / file, feed[name])
            files.append(file)
            self.overall[name].add(feed[name])
            per_t[name].add(feed[name])
        self.lines.append(" ".join(files))
        self.samples.append({**about, "files": files})

    def close(self, meta: dict) -> dict:
        (self.folder / DATASET).write_text("\n".join(self.lines) + "\n")
        stats = {
            **meta,
            "inputs": self.input_names,
            "count": len(self.samples),
            "stats": {name: run.summary() for name, run in self.overall.items()},
            "per_timestep": {str(t): {n: {k: v for k, v in r.summary().items() if k != "percentiles"}
                                      for n, r in runs.items()} for t, runs in sorted(self.by_timestep.items())},
            "samples": self.samples,
        }
        (self.folder / STATS).write_text(json.dumps(stats, indent=1))
        return stats


def read_samples(folder: Path) -> tuple[list[dict[str, np.ndarray]], list[float]]:
    """The samples a DatasetWriter wrote (graph inputs by name) and the timestep of each."""
    stats = json.loads((folder / STATS).read_text())
    feeds = [{name: np.load(folder / file) for name, file in zip(stats["inputs"], sample["files"])}
             for sample in stats["samples"]]
    return feeds, [sample["timestep"] for sample in stats["samples"]]
