"""A full-size single-file checkpoint read as a pipeline: time, peak memory and exactness, on this machine.

    .venv/bin/python tools/bench_single_file.py --model sd15 [--half] [--build] [--json bench-results/single-file-sd15.json]

Writes the model's pipeline (seeded weights) as one file in the original LDM layout (tools/make_single_file.py),
then, in a fresh process each, `--model FILE` as rkconvert resolves it: the first time (the file converted
into the cache's pipeline folder) and again (the folder reused). Checks that the UNet config read from the
weights is the preset's, and that the UNet, VAE and text encoder weights loaded back equal the written ones.
`--build` then times `rkconvert build --target rk3588 --model FILE` (512 px, float16) as tools/bench_build.py
does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_build import figures, git_commit, machine, timed_build  # tools/ is on sys.path as a script's folder

RESOLVE = """
import json, resource, sys
from converter.models.model_source import resolve
path = resolve(sys.argv[1]).path
print(json.dumps({"folder": str(path), "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

COMPARE = """
import json, sys, torch
from diffusers import AutoencoderKL
from transformers import CLIPTextModel
from converter.models.model_source import resolve
from converter.models.presets import preset_config
from tools.make_single_file import full_parts
source = resolve(sys.argv[1])
written = full_parts(sys.argv[2])
loaded = (source.load_unet(), AutoencoderKL.from_pretrained(source.path / "vae"),
          CLIPTextModel.from_pretrained(source.path / "text_encoder"))
half = sys.argv[3] == "1"
unequal = {}
for name, mine, theirs in zip(("unet", "vae", "text_encoder"), loaded, written):
    a, b = mine.state_dict(), theirs.state_dict()
    bad = [k for k in b if k not in a or not torch.equal(a[k], b[k].half().float() if half else b[k])]
    unequal[name] = {"tensors": len(b), "unequal": len(bad) + len(set(a) - set(b))}
config = loaded[0].config
preset = preset_config(sys.argv[2])
print(json.dumps({"weights": unequal,
                  "config_differs_from_preset": sorted(k for k in preset if k != "sample_size"
                                                       and json.dumps(config[k]) != json.dumps(preset[k]))}))
"""


def _child(code: str, *args: str, env: dict) -> tuple[dict, float]:
    """(the JSON the child printed last, wall seconds)."""
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                            cwd=Path(__file__).resolve().parent.parent, timeout=3600)
    if result.returncode:
        raise SystemExit(f"bench_single_file: child failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1]), time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["sd15", "sd21"], default="sd15")
    parser.add_argument("--half", action="store_true", help="write the file in float16, as most downloads are")
    parser.add_argument("--build", action="store_true", help="also build the file for rk3588 at 512 px")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="bench-single-file-") as scratch:
        path = Path(scratch) / f"{args.model}.safetensors"
        env = {**os.environ, "RKCONVERT_CACHE": str(Path(scratch) / "cache"), "PYTHONPATH": str(root)}
        start = time.monotonic()
        subprocess.run([sys.executable, str(root / "tools" / "make_single_file.py"), "--model", args.model,
                        "--out", str(path), *(["--half"] if args.half else [])], check=True, env=env)
        written = time.monotonic() - start
        converted, first = _child(RESOLVE, str(path), env=env)
        cached, again = _child(RESOLVE, str(path), env=env)
        compared, _ = _child(COMPARE, str(path), args.model, "1" if args.half else "0", env=env)
        folder_bytes = sum(f.stat().st_size for f in Path(converted["folder"]).rglob("*") if f.is_file())
        built = None
        if args.build:
            os.environ["RKCONVERT_CACHE"] = env["RKCONVERT_CACHE"]  # the build's child finds the folder written
            built = figures(timed_build(["--target", "rk3588", "--model", str(path), "--layer-report", "off"],
                                        Path(scratch) / "build"))
        result = {"benchmark": "single_file", "model": args.model, "half": args.half, "machine": machine(),
                  "commit": git_commit(), "file_bytes": path.stat().st_size, "pipeline_folder_bytes": folder_bytes,
                  "write_file_seconds": round(written, 1), "first_resolve_seconds": round(first, 1),
                  "first_resolve_peak_rss_bytes": converted["peak_rss_bytes"], "cached_resolve_seconds": round(again, 1),
                  "cached_resolve_peak_rss_bytes": cached["peak_rss_bytes"], **compared,
                  **({"build": built} if built else {})}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
