"""A W8A16 UNet lowered for rk3588 three ways: float16, w8a8, w8a8 + hybrid. Size and accuracy, as JSON.

    .venv/bin/python tools/bench_quantized.py --model sd15 --resolution 256 [--min-psnr 40] [--variants float16,w8a8]
    .venv/bin/python tools/bench_quantized.py --model demo --resolution 128

`rkconvert quantize` makes the W8A16 checkpoint; each build is judged on the same held-out inputs
recorded along the sampler's trajectories (--check-inputs trajectories) against ONNX Runtime on the
float32 (dequantized) model. The hybrid build needs the per-layer report (--layer-report on), which
for large models and resolutions means large text dumps on disk.

A model that can draw (the demo) is also judged by its images: each build's image check (image PSNR
and SSIM of the .rknn's images against the dequantized model's, prompt accuracy), and the .rknn's
images against the float model's own (a float16 build of the unquantized model, made first).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from bench_build import git_commit, machine  # tools/ is on sys.path when a tool runs as a script


def rkconvert(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "converter.cli", *args]).returncode


def _float_reference(args, out: Path) -> dict[str, Path] | None:
    """Prompt -> the unquantized model's own image (ONNX Runtime), when the model can draw."""
    if rkconvert("build", "--target", "rk3588", "--model", args.model, "--resolution", str(args.resolution),
                 "--layer-report", "off", "--min-psnr", "0", "--out", str(out)):
        return None
    images = json.loads((out / "report.json").read_text()).get("images")
    folder = out / images["grid"].rsplit("/", 1)[0] if images else None
    return {r["prompt"]: folder / r["reference"] for r in images["rows"]} if images else None


def _against(float_images: dict[str, Path] | None, out: Path, report: dict) -> dict | None:
    """Image PSNR / SSIM and prompt accuracy of a build's .rknn images against the float model's images."""
    images = report.get("images")
    if not float_images or not images:
        return None
    from PIL import Image

    from converter.imaging.evaluation import psnr, ssim

    folder = out / images["grid"].rsplit("/", 1)[0]
    pairs = [(np.asarray(Image.open(folder / r["rknn"]).convert("RGB")),
              np.asarray(Image.open(float_images[r["prompt"]]).convert("RGB"))) for r in images["rows"]]
    return {"psnr_db_mean": float(np.mean([psnr(a, b) for a, b in pairs])),
            "ssim_mean": float(np.mean([ssim(a, b) for a, b in pairs]))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd15")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--check-samples", type=int, default=2)
    parser.add_argument("--min-psnr", type=float, default=None,
                        help="the hybrid build's gate (default: the plain w8a8 build's PSNR + --hybrid-gain)")
    parser.add_argument("--hybrid-gain", type=float, default=6.0)
    parser.add_argument("--hybrid-builds", type=int, default=12, help="passed on to rkconvert build")
    parser.add_argument("--variants", default="float16,w8a8,w8a8+hybrid",
                        help="which builds (comma-separated); w8a8+hybrid without w8a8 needs --min-psnr")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if "w8a8+hybrid" in args.variants and "w8a8" not in args.variants.split(",") and args.min_psnr is None:
        parser.error("w8a8+hybrid without the plain w8a8 build needs --min-psnr")
    json_path = args.json or Path("bench-results") / f"quantized-{args.model.replace(':', '-')}-{args.resolution}.json"

    results = {"benchmark": "quantized", "model": args.model, "resolution": args.resolution, "target": "rk3588",
               "samples": args.samples, "machine": machine(), "commit": git_commit(), "builds": {}}
    with tempfile.TemporaryDirectory(prefix="bench-quantized-") as tmp:
        float_images = _float_reference(args, Path(tmp) / "float")
        folder = Path(tmp) / "w8a16"
        start = time.monotonic()
        if rkconvert("quantize", "--model", args.model, "--resolution", str(args.resolution), "--out", str(folder)):
            return 1
        results["quantize_seconds"] = round(time.monotonic() - start, 1)
        results["quantize"] = {k: v for k, v in json.loads((folder / "quantize.json").read_text()).items()
                               if k != "per_layer"}
        variants = [("float16", "float16", ["--min-psnr", "0"]), ("w8a8", "w8a8", ["--min-psnr", "0", "--no-hybrid"]),
                    ("w8a8+hybrid", "w8a8", None)]
        variants = [v for v in variants if v[0] in args.variants.split(",")]
        out = Path(tmp) / "build"  # one folder: the export, passes, calibration and check stages are shared
        for name, dtype, extra in variants:
            if extra is None:
                gate = args.min_psnr or results["builds"]["w8a8"]["output_psnr_db"] + args.hybrid_gain
                results["hybrid_min_psnr"] = round(gate, 2)
                extra = ["--min-psnr", str(gate), "--layer-report", "on", "--hybrid-builds", str(args.hybrid_builds)]
            start = time.monotonic()
            code = rkconvert("build", "--target", "rk3588", "--model", str(folder), "--resolution", str(args.resolution),
                             "--dtype", dtype, "--check-inputs", "trajectories", "--check-samples", str(args.check_samples),
                             "--samples", str(args.samples), "--trajectories", str(args.trajectories),
                             "--layer-report", "off", *extra, "--out", str(out))
            report = json.loads((out / "report.json").read_text())
            results["builds"][name] = {
                "exit_code": code, "seconds": round(time.monotonic() - start, 1),
                "output_psnr_db": report.get("output_psnr_db"), "output_cosine": report.get("output_cosine"),
                "artifact_bytes": report.get("artifact_bytes"), "fp32_onnx_bytes": report.get("onnx_bytes"),
                "artifact_to_fp32_onnx": report.get("artifact_to_onnx"),
                "float16_layers": len(report.get("float16_layers") or []),
                "compiled_layer_dtypes": dict(Counter(row["dtype"] for row in report.get("placement") or []
                                                      if row["op"] != "InputOperator")),
                "hybrid_trials": report.get("hybrid_trials"), "error": report.get("error"),
                "images": (report.get("images") or {}).get("summary"),
                "vs_float_model_images": _against(float_images, out, report),
            }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["builds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
