"""Child-process side of the toolkit driver: the only module that imports `rknn`.

Run as `python -m converter.toolkit.worker job.json` (a ToolkitJob, and where to put what it makes)
from a scratch directory (the toolkit writes `check*.onnx` files into its working directory). Builds the `.rknn`, then runs every check sample
in the toolkit's simulator and saves the outputs; optionally dumps every layer (accuracy_analysis).
With `serve` in the job it then connects to the parent and runs the inputs it sends until told to
stop: the simulator cannot run a `.rknn` loaded from a file, only the model it has just built, so a
denoising loop through the `.rknn` talks to the process that built it. A failing toolkit call exits
non-zero after an ERROR line; a crash inside the toolkit ends the process by a signal, which the
parent reports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from converter.toolkit.child import ERROR, PHASE
from converter.toolkit.job import QUANT_CONFIG, STEP1_DATA, STEP1_MODEL, ToolkitJob


# Peak resident memory per toolkit call, to see which one a large model's memory goes to: Linux
# resets a process's high-water mark (VmHWM) when "5" is written to /proc/self/clear_refs. That can also
# lower what the parent's wait4() reports as the child's peak: the parent takes the larger of the two
# ("startup": the imports, before the first call).
PEAKS: dict[str, int] = {}


def _peak_bytes() -> int:
    try:
        return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
    except (OSError, AttributeError):
        return 0


def _reset_peak() -> None:
    PEAKS.setdefault("startup", _peak_bytes())
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _call(phases: dict, name: str, fn, *args, **kwargs):
    print(f"{PHASE}{name}()", flush=True)
    _reset_peak()
    start = time.monotonic()
    result = fn(*args, **kwargs)
    phases[name] = round(time.monotonic() - start, 3)
    PEAKS[name] = _peak_bytes()
    if isinstance(result, int) and result != 0:
        print(f"{ERROR}{name}() returned {result}", flush=True)
        sys.exit(3)
    return result


def keep_float16(cfg: Path, layers: list[str]) -> int:
    """Mark `layers` float16 in the toolkit's hybrid-quantization config; returns how many it knew.

    Only the `custom_quantize_layers` line is rewritten: step2 refuses a config whose quantization
    parameters differ from step1's in any digit ("... is not allowed to be modified!"), and a YAML
    round trip (ruamel) rewrites floats in exponent form (1.2350002048062343e-05 -> ...342e-05), which
    the full-size SD 1.5 UNet's config has and the small test UNets' do not.
    """
    from ruamel.yaml import YAML

    text = cfg.read_text()
    parameters = YAML(typ="safe").load(text)["quantize_parameters"]  # once: ~1 s for the demo's config
    # once each: a tensor where two parts meet is quantized in both and named twice (step2's YAML refuses
    # a repeated key: SD 1.5 as w8a8 in 3 parts failed its first hybrid try so)
    known = [name for name in dict.fromkeys(layers) if name in parameters]
    head, sep, rest = text.partition("\n")
    if not head.startswith("custom_quantize_layers:"):
        raise ValueError(f"{cfg}: expected custom_quantize_layers on the first line, found {head[:60]!r}")
    entries = "".join(f"\n    {json.dumps(name)}: float16" for name in known)
    cfg.write_text(f"custom_quantize_layers:{entries or ' {}'}{sep}{rest}")
    return len(known)


def _build(job: ToolkitJob, phases: dict, step1_dir: str | None):
    """The RKNN object holding the built model, and how many float16 layers it applied."""
    if job.quantized and not job.auto_hybrid:
        return _hybrid_quantization(job, phases, step1_dir)
    rknn = _loaded(job, phases)
    _call(phases, "build", rknn.build, do_quantization=job.quantized,
          dataset=str(job.dataset) if job.quantized else None, auto_hybrid=job.auto_hybrid)
    return rknn, 0


def _loaded(job: ToolkitJob, phases: dict):
    from rknn.api import RKNN

    rknn = RKNN(verbose=True)
    _call(phases, "config", rknn.config, target_platform=job.target, **job.config())
    _call(phases, "load_onnx", rknn.load_onnx, model=str(job.onnx))
    return rknn


def _hybrid_quantization(job: ToolkitJob, phases: dict, step1_dir: str | None):
    """A quantized build in hybrid quantization's two steps, even with no layer kept float16 (the same
    model as build()): step1's files (its config has every quantized tensor's range, for the sensitivity
    measurement) go to `step1_dir`, unless the job starts from another build's (`job.step1`: step2 only)."""
    from rknn.api import RKNN

    source = job.step1 or _step1(job, phases, Path(step1_dir))
    edited = Path("hybrid.quantization.cfg")
    shutil.copyfile(source / QUANT_CONFIG, edited)
    applied = keep_float16(edited, list(job.float16_layers))
    rknn = RKNN(verbose=True)
    _call(phases, "config", rknn.config, target_platform=job.target, **job.config())
    _call(phases, "hybrid_quantization_step2", rknn.hybrid_quantization_step2, model_input=str(source / STEP1_MODEL),
          data_input=str(source / STEP1_DATA), model_quantization_cfg=str(edited))
    return rknn, applied


def _step1(job: ToolkitJob, phases: dict, folder: Path) -> Path:
    rknn = _loaded(job, phases)
    # step1 writes <stem>.model / .data / .quantization.cfg into the working (scratch) folder.
    _call(phases, "hybrid_quantization_step1", rknn.hybrid_quantization_step1, dataset=str(job.dataset))
    rknn.release()
    folder.mkdir()
    stem = job.onnx.stem
    for made, kept in ((f"{stem}.model", STEP1_MODEL), (f"{stem}.data", STEP1_DATA),
                       (f"{stem}.quantization.cfg", QUANT_CONFIG)):
        os.replace(made, folder / kept)
    return folder


def _infer(phases: dict, label: str, rknn, job: ToolkitJob, feed: dict) -> list:
    feeds = [feed[name] for name in job.inputs]
    return _call(phases, label, rknn.inference, inputs=feeds, data_format=["nchw"] * len(feeds))


def _await_inputs(phases: dict, paths: list[Path]) -> None:
    """The build of an earlier part of the graph may still be computing this part's check inputs (parts are
    relayed: converter/toolkit/relay.py): wait until all are there. A file that is there is whole: each is
    saved under another name and renamed (_save_whole); if the part before fails, the parent stops this one."""
    def arrived() -> None:
        while not all(path.exists() for path in paths):
            time.sleep(0.2)

    if not all(path.exists() for path in paths):
        _call(phases, "await_inputs", arrived)


def _save_whole(path: Path, value: np.ndarray) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as out:
        np.save(out, value)
    os.replace(partial, path)


def _serve(rknn, job: ToolkitJob, address: str) -> None:
    """Answer ("infer", [feed, ...]) with [[output, ...], ...] until ("close",)."""
    from multiprocessing.connection import Client

    with Client(address, family="AF_UNIX") as conn:
        served = 0
        while True:
            message = conn.recv()
            if message[0] == "close":
                return
            outputs = []
            for feed in message[1]:
                outputs.append(_infer({}, f"inference[serve {served}]", rknn, job, feed))
                served += 1
            conn.send(outputs)


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    job = ToolkitJob.from_json(spec["job"])
    phases: dict[str, float] = {}
    rknn, float16_applied = _build(job, phases, spec["step1_dir"])
    _call(phases, "export_rknn", rknn.export_rknn, spec["rknn"])
    if spec["samples"]:
        _await_inputs(phases, [Path(path) for sample in spec["samples"] for path in sample.values()])
    if spec["samples"] or spec.get("serve"):
        _call(phases, "init_runtime", rknn.init_runtime)
    for i, (sample, paths) in enumerate(zip(spec["samples"], spec["outputs"])):
        result = _infer(phases, f"inference[{i}]", rknn, job, {name: np.load(sample[name]) for name in job.inputs})
        for value, path in zip(result, paths):  # by position: tensor names may hold '/'
            _save_whole(Path(path), value)
    if spec.get("snapshot_dir"):
        # Per-layer dumps of the first sample: 'golden' (the toolkit's own float run of its rewritten
        # graph) and 'simulator', plus its error table.
        paths = [spec["samples"][0][name] for name in job.inputs]
        _call(phases, "accuracy_analysis", rknn.accuracy_analysis, inputs=paths, output_dir=spec["snapshot_dir"])
    if spec.get("serve"):
        _serve(rknn, job, spec["serve"])
    rknn.release()
    Path(spec["result"]).write_text(json.dumps({"phases": phases, "phase_peak_rss_bytes": PEAKS,
                                                "outputs": spec["outputs"], "float16_layers_applied": float16_applied}))


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as e:
        # The toolkit wraps its errors: str(e) starts with "Traceback ..." and ends with the message.
        lines = [line for line in str(e).splitlines() if line.strip()]
        message = lines[-1] if lines else ""
        named = message.startswith(f"{type(e).__name__}:")
        print(f"{ERROR}{message if named else f'{type(e).__name__}: {message}'}", flush=True)
        raise
