"""How much memory one matrix entry's build needs, for Ray to place it where it fits (`memory=`).

An estimate from the weights alone: the whole process tree of SD 1.5's build at 512 px for rk3588
(float16, tiling auto) peaked at 14.97 GB for 3.44 GB of float32 weights (tools/bench_build.py on a
2-core, 24 GiB machine), 4.35x, nearly all of it the toolkit's process. With --parts N the toolkit holds
one part at a time, up to graph_cut.LARGEST / N of the weights (2 parts: 8.41 GB, the toolkit 7.95 GB for a
part with 58% of them), and the export (the rkconvert process: 4.64 GB, 1.35x) can be the larger. Relayed
parts (converter/toolkit/relay.py) add the next part's start while one finishes, about a part's share of
the weights once more (2 parts: 9.86 GB against 8.20 GB with --parts-in-turn).
A quantized build runs the toolkit's step1 and step2: 6.3x its part's weights (w8a8 in 2 parts: 12.4 GB
for that part).
It leaves out resolution (activations), dtype (a w8a8 build also calibrates) and the hybrid search's
extra builds, which run one after another. Tiny models get the floor: the interpreter, torch and the
toolkit imported.
"""

from __future__ import annotations

from pathlib import Path

from converter.builds import graph_cut
from converter.toolkit.job import FLOAT16

PEAK_PER_WEIGHT_BYTE = 4.4
QUANTIZED_PEAK_PER_WEIGHT_BYTE = 6.3
EXPORT_PER_WEIGHT_BYTE = 1.4
FLOOR_BYTES = 2 * 2**30
FLOAT32 = 4


def _preset_weight_bytes(spec: str) -> int:
    import torch
    from diffusers import UNet2DConditionModel

    from converter.models import presets

    config = {k: v for k, v in presets.preset_config(spec).items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    return FLOAT32 * sum(p.numel() for p in unet.parameters())


def _file_bytes(path: Path) -> int:
    files = list(path.rglob("*")) if path.is_dir() else [path, path.with_name(path.name + ".data")]
    return sum(p.stat().st_size for p in files if p.is_file())


def weight_bytes(model: str, workdir: Path) -> int:
    """Float32 bytes of the model's weights: a preset's parameters, or the size of its files (a
    float16 file counts half: a known underestimate)."""
    from converter.models import presets

    if model == presets.DEMO:
        from converter.models import demo

        return _file_bytes(demo.PIPELINE / "unet")
    if model.partition(presets.MINI_SUFFIX)[0] in presets.PRESETS:
        return _preset_weight_bytes(model)
    path = workdir / model
    return _file_bytes(path) if path.exists() else 0


def peak_bytes(options: dict, workdir: Path) -> int:
    """The estimate for a matrix entry's build `options` (model, dtype, parts and parts-in-turn, named as on
    the command line; a dtype left to auto counts as float16)."""
    weights = weight_bytes(str(options["model"]), workdir)
    quantized = options.get("dtype", "auto") not in ("auto", FLOAT16)
    parts = options.get("parts", "auto")
    count = graph_cut.auto_count(weights, quantized) if parts == "auto" else int(parts)
    share = min(1.0, graph_cut.LARGEST / count)
    per_byte = QUANTIZED_PEAK_PER_WEIGHT_BYTE if quantized else PEAK_PER_WEIGHT_BYTE
    relayed = weights / count if count > 1 and not options.get("parts-in-turn") else 0
    return max(FLOOR_BYTES, round(per_byte * share * weights + relayed), round(EXPORT_PER_WEIGHT_BYTE * weights))
