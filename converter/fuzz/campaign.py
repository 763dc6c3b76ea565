"""A fuzz campaign: seed after seed, each graph a trial per dtype (here one at a time, or as Ray tasks), every
failure filed in the corpus by its signature, until the time or the graphs run out; then summary.json.

OUT/trials/<seed>-<dtype>/ keeps the trials that failed or met an error; OUT/corpus/<key>/ one folder per
distinct failure; OUT/trials.jsonl a line per trial as it ends; OUT/catalogue.toml the catalogue they were
matched against.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass, replace
from itertools import count
from pathlib import Path
from typing import Callable, Iterator

from converter.common import ray_cluster
from converter.fuzz import corpus
from converter.fuzz.trial import Trial, run_trial
from converter.toolkit import driver

TASK_MEMORY_BYTES = 2 * 2**30  # a fuzz graph's build and diagnosis stay under 1.5 GB
CATALOGUE_COPY = "catalogue.toml"


@dataclass(frozen=True)
class Campaign:
    target: str
    dtypes: tuple[str, ...]
    out: Path
    catalogue: Path
    seconds: float
    graphs: int | None = None  # stop after this many seeds (None: when the time is up)
    first_seed: int = 0
    seeds: tuple[int, ...] = ()  # these seeds only (a re-run of the ones that failed), else from first_seed on

    @property
    def work(self) -> Path:
        return self.out / "trials"

    def jobs(self) -> Iterator[tuple[int, str]]:
        seeds = self.seeds or (count(self.first_seed) if self.graphs is None else
                               range(self.first_seed, self.first_seed + self.graphs))
        return ((seed, dtype) for seed in seeds for dtype in self.dtypes)


def trial_on_node(seed: int, target: str, dtype: str, work: str, catalogue: str) -> dict:
    """A Ray task's body (module level, so every node imports it from the installed rkconvert)."""
    return run_trial(seed, target, dtype, Path(work), Path(catalogue)).to_json()


def _local(campaign: Campaign, deadline: float) -> Iterator[Trial]:
    for seed, dtype in campaign.jobs():
        if time.monotonic() > deadline:
            return
        yield run_trial(seed, campaign.target, dtype, campaign.work, campaign.catalogue)


def _ray(campaign: Campaign, deadline: float, address: str) -> Iterator[Trial]:
    """As many trials in flight as the cluster has CPUs; no new one once the time is up."""
    with ray_cluster.joined(address) as ray:
        task = ray.remote(num_cpus=1, memory=TASK_MEMORY_BYTES)(trial_on_node)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        jobs, pending = campaign.jobs(), []
        while True:
            while len(pending) < slots and time.monotonic() < deadline and (job := next(jobs, None)):
                pending.append(task.remote(job[0], campaign.target, job[1], str(campaign.work),
                                           str(campaign.catalogue)))
            if not pending:
                return
            (done,), pending = ray.wait(pending, num_returns=1)
            yield Trial.from_json(ray.get(done))


def run_campaign(campaign: Campaign, ray_address: str | None = None,
                 on_trial: Callable[[Trial, str | None], None] | None = None) -> dict:
    """Run `campaign`; summary.json's content. `on_trial(trial, corpus key)` as each trial ends."""
    campaign.work.mkdir(parents=True, exist_ok=True)
    # Every trial matches against the catalogue as it was at the start: one edited meanwhile (as the
    # failures found come in) would judge later trials by another, or by a half-written one.
    shutil.copyfile(campaign.catalogue, campaign.out / CATALOGUE_COPY)
    campaign = replace(campaign, catalogue=campaign.out / CATALOGUE_COPY)
    start = time.monotonic()
    deadline = start + campaign.seconds
    trials = []
    found = _ray(campaign, deadline, ray_address) if ray_address else _local(campaign, deadline)
    with open(campaign.out / "trials.jsonl", "a") as log:
        for trial in found:
            key = corpus.file(campaign.out / "corpus", trial)
            trials.append((trial, key))
            log.write(json.dumps({**trial.to_json(), "corpus": key}) + "\n")
            log.flush()
            if on_trial:
                on_trial(trial, key)
    summary = {"executor": f"ray {ray_address}" if ray_address else "local",
               **_summary(campaign, trials, time.monotonic() - start)}
    partial = campaign.out / ".summary.json.partial"
    partial.write_text(json.dumps(summary, indent=1))
    partial.replace(campaign.out / "summary.json")
    return summary


def _summary(campaign: Campaign, trials: list[tuple[Trial, str | None]], seconds: float) -> dict:
    keys = list(dict.fromkeys(key for _, key in trials if key))
    classes = []
    for key in keys:
        entry = json.loads((campaign.out / "corpus" / key / corpus.ENTRY).read_text())
        classes.append({"key": key, **entry})
    failed = [t for t, _ in trials if t.failure]
    return {
        "target": campaign.target, "dtypes": list(campaign.dtypes), "toolkit_version": driver.toolkit_version(),
        "minutes": round(seconds / 60, 1), "graphs": len({t.seed for t, _ in trials}), "trials": len(trials),
        "failed_trials": len(failed), "failures": len(keys), "diagnosed": sum(t.diagnosed for t in failed),
        "diagnose_errors": sum(t.error is not None for t in failed),
        "probe_errors": sum(t.error is not None and t.failure is None for t, _ in trials),
        "median_repro_nodes": statistics.median(c["repro_nodes"] for c in classes) if classes else None,
        "classes": classes,
        "errors": [{"trial": f"{t.seed}-{t.dtype}", "error": t.error, "folder": t.folder}
                   for t, _ in trials if t.error],
    }
