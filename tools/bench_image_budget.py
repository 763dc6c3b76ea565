"""Where a w8a8 model's images lie against its float16 budget, in ONNX Runtime's emulation of the toolkit's int8.

    .venv/bin/python tools/bench_image_budget.py --model demo [--ks 0,16,32,48,64,96,128]

One plain w8a8 build gives the toolkit's quantization (every activation's scale and zero point); then the
model's evaluation set is drawn with the UNet in the emulation (converter/mixed_precision/sensitivity.py: the
toolkit's int8 on every activation, weights float), the first k tensors of stage sensitivity's ranking left
float, and each image is compared with the one ONNX Runtime draws in float32. No toolkit build per point:
a drawing costs an ONNX Runtime inference per UNet call. Rows:
- `kept`: images and output PSNR (check inputs, the gate's measure) against k;
- `metric_noise`: the k = 32 drawing again with every scale times 1 + 1e-6, which moves a few roundings by
  a level: how much the image PSNR moves when the quantization does not (sampling trajectories amplify it);
- `float_steps`: the k = 48 drawing with the steps in a timestep window left float: which steps' int8 error
  reaches the images;
- `timestep_groups`: the k = 48 drawing with each activation's range fitted to the calibration inputs of
  its half of the schedule (the early steps' and the late steps' own scales): what timestep-aware ranges
  would give.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_build import git_commit, machine, plain_w8a8  # tools/ is on sys.path when a tool runs as a script

NOISE_KEPT, WINDOW_KEPT = 32, 48
WINDOWS = {"t < 250 float (last 5 of 20 steps)": (0, 250), "t > 750 float (first 4 of 20 steps)": (750, 1000)}
HALVES = 500  # timestep where the early and late ranges of `timestep_groups` meet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--ks", default="0,16,32,48,64,96,128")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    json_path = args.json or Path("bench-results") / f"image-budget-{args.model.replace(':', '-')}.json"

    from rich.console import Console

    from calib_data.dataset_writer import read_samples
    from converter.builds.build_dir import finished_stage
    from converter.builds.drawing import Drawing, draw
    from converter.builds.stages.passes import Rewritten
    from converter.builds.stages.reference import Reference
    from converter.builds.stages.rknn import Converted
    from converter.builds.stages.sensitivity import rank
    from converter.common import onnx_runtime
    from converter.common.onnx_graph import Graph
    from converter.common.progress import Progress
    from converter.imaging.evaluation import compare_images, eval_set, judge_for
    from converter.imaging.text_to_image import to_uint8
    from converter.mixed_precision.sensitivity import MASK, Emulation, emulate, observed_ranges
    from converter.reports.build_report import load_build
    from converter.toolkit import quant_config

    with tempfile.TemporaryDirectory(prefix="bench-image-budget-") as tmp:
        out, scratch = Path(tmp) / "build", Path(tmp) / "scratch"
        code = plain_w8a8(args.model, out)
        if code:
            return code
        report = load_build(out)
        folder = Path(report.pipeline)
        evaluation = eval_set(folder)
        passes = Rewritten.read(finished_stage(out, "passes"))
        reference = Reference.read(finished_stage(out, "reference"))
        graph = Graph.load(passes.onnx)
        quantized = [q for cfg in Converted.read(finished_stage(out, "rknn")).quant_configs
                     for q in quant_config.read(cfg, graph)]
        calibration, _ = read_samples(finished_stage(out, "calib").path)
        emulation = emulate(passes.onnx, quantized, calibration, 2, scratch)
        order = [s.tensor for s in rank(passes.onnx, emulation, Progress(Console()))]
        checks = [reference.feed(i) for i in range(len(reference.samples))]
        drawing, judge = Drawing.of(evaluation, report.resolution), judge_for(evaluation.judge)
        feeder, output = passes.feeder(), passes.outputs[0]

        def drawn(choose) -> np.ndarray:
            """The evaluation set with the UNet in the emulation `choose(t)` picks, with its mask, for each call's
            timestep t."""
            timestep = [0.0]

            def to_graph(feed: dict) -> dict:
                timestep[0] = float(feed["timestep"].reshape(-1)[0])
                return feeder(feed)

            def run(feeds: list[dict]) -> list[np.ndarray]:
                emulated, on = choose(timestep[0])
                return [onnx_runtime.run(emulated.session, {**f, MASK: on})[output] for f in feeds]

            return to_uint8(draw(folder, drawing, {"prompt": drawing.prompts}, to_graph, run))

        def versus(images: np.ndarray) -> dict:
            compared = compare_images(float32, images, drawing.prompts, judge)
            summary = {k: round(v, 3) if isinstance(v, float) else v for k, v in compared["summary"].items()}
            return {**summary, "per_image": [round(r["psnr_db"], 1) for r in compared["rows"]]}

        float32 = drawn(lambda t: (emulation, np.zeros(len(emulation.points), np.float32)))
        curve = emulation.curve(checks, order, ks)
        results = {"benchmark": "image-budget", "model": args.model, "target": "rk3588", "machine": machine(),
                   "commit": git_commit(), "resolution": report.resolution, "images": len(float32),
                   "steps": evaluation.steps, "tensors": len(order), "plain_output_psnr_db": report.psnr_db,
                   "kept": {}, "first": order[:10]}
        for k in ks:
            results["kept"][k] = {"output_psnr_db": round(curve[k], 2),
                                  **versus(drawn(lambda t, m=emulation.mask(order[:k]): (emulation, m)))}
            print("kept", k, results["kept"][k], flush=True)

        nudged = Emulation(passes.onnx, [replace(p, scale=p.scale * (1 + 1e-6)) for p in emulation.points], [],
                           scratch / "nudged")
        results["metric_noise"] = {"kept": NOISE_KEPT,
                                   **versus(drawn(lambda t: (nudged, emulation.mask(order[:NOISE_KEPT]))))}
        print("metric noise", results["metric_noise"], flush=True)

        quantized_mask = emulation.mask(order[:WINDOW_KEPT])
        results["float_steps"] = {"kept": WINDOW_KEPT}
        for label, (low, high) in WINDOWS.items():
            float_mask = np.zeros_like(quantized_mask)
            results["float_steps"][label] = versus(drawn(
                lambda t: (emulation, float_mask if low <= t < high else quantized_mask)))
            print(label, results["float_steps"][label], flush=True)

        steps = _calibration_timesteps(calibration, passes, finished_stage(out, "calib").path)
        halves = {}
        for name, pick in (("late", lambda t: t < HALVES), ("early", lambda t: t >= HALVES)):
            feeds = [f for f, t in zip(calibration, steps) if pick(t)]
            ranges = observed_ranges(passes.onnx, {p.tensor for p in emulation.points}, feeds, scratch / name)
            fitted = [_fitted(p, *ranges[p.tensor]) for p in emulation.points]
            halves[name] = (Emulation(passes.onnx, fitted, [], scratch / f"half-{name}"),
                            float(np.median([f.scale / p.scale for f, p in zip(fitted, emulation.points)])), len(feeds))
        results["timestep_groups"] = {
            "kept": WINDOW_KEPT, "split_at_timestep": HALVES,
            "median_scale_vs_whole_schedule": {name: round(h[1], 3) for name, h in halves.items()},
            "calibration_inputs": {name: h[2] for name, h in halves.items()},
            **versus(drawn(lambda t: (halves["late" if t < HALVES else "early"][0], quantized_mask)))}
        print("timestep groups", results["timestep_groups"], flush=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _fitted(point, low: float, high: float):
    """`point` with the toolkit's asymmetric int8 (normal: the observed range, widened to hold zero)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-12) / 255
    return replace(point, scale=scale, zero_point=int(np.clip(np.round(-low / scale) - 128, -128, 127)))


def _calibration_timesteps(calibration: list[dict], passes, calib_folder: Path) -> list[float]:
    """Each calibration input's timestep: the schedule's one whose graph inputs (t_emb, from the host
    programs) it carries."""
    timesteps = json.loads((calib_folder / "calib.json").read_text())["timesteps"]
    feeder, probe = passes.feeder(), calibration[0]
    base = {"sample": probe.get("sample"), "encoder_hidden_states": probe.get("encoder_hidden_states")}
    made = {t: feeder({**base, "timestep": np.array([t], np.float32)}) for t in timesteps}
    varying = [name for name in made[timesteps[0]] if name not in base]

    def distance(feed: dict, t: float) -> float:
        return max(float(np.abs(made[t][n] - feed[n]).max()) for n in varying)

    return [min(timesteps, key=lambda t: distance(feed, t)) for feed in calibration]


if __name__ == "__main__":
    sys.exit(main())
