"""What `--model` names: the built-in demo, a preset, a diffusers pipeline or UNet (folder or weights file), a
single-file checkpoint (read as the pipeline folder it converts to), or a UNet ONNX."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from converter.common.errors import UserError
from converter.common.weight_variant import fp16_only
from converter.models import ldm_layout, presets, single_file
from converter.models.lora import Lora
from converter.models.vae_swap import Vae

PIPELINE_INDEX = "model_index.json"  # marks a diffusers pipeline folder (unet/, text_encoder/, vae/, ...)


@dataclass(frozen=True)
class ModelSource:
    spec: str
    kind: str  # "preset" | "pipeline" | "folder" | "weights" | "onnx"
    path: Path | None = None
    config_path: Path | None = None
    trust_pickle: bool = False
    seed: int = 0
    origin: Path | None = None  # the single-file checkpoint a "pipeline" source was converted from
    # What stands for the files in stage keys when they were made by a stage (a pipeline model traced by a build:
    # that stage's key), so a copied or moved build folder still reuses what was built from them.
    identity: str | None = None
    loras: tuple[Lora, ...] = ()  # fused into the pipeline folder `path` (models/lora.py)
    vae: Vae | None = None  # in place of the pipeline's own in `path` (models/vae_swap.py)
    prediction_type: str | None = None  # set in `path`'s scheduler config where the file cannot say it
    ema: bool = True  # a single file holding EMA weights beside the trained ones: which the UNet has

    @property
    def name(self) -> str:
        """Short name for build folders: the preset name or the file / folder stem, each LoRA's name, the VAE's stem."""
        return "+".join([self._base_name, *(lora.name for lora in self.loras),
                         *([self.vae.path.stem] if self.vae else [])])

    @property
    def _base_name(self) -> str:
        if self.kind == "preset" or self.spec == presets.DEMO:
            return self.spec.replace(":", "-")
        if self.origin:
            return self.origin.stem
        path = Path(self.spec) if self.derived else self.path  # a derived pipeline's `path` is under the cache
        stem = path.stem if path.is_file() else path.name
        return stem or "model"

    @property
    def derived(self) -> bool:
        """Whether `path` is a pipeline folder derived from the one `spec` names (models/derived_pipeline.py)."""
        return bool(self.loras or self.vae or self.prediction_type)

    def fingerprint(self) -> dict:
        """Identity of the source for stage keys: file sizes and modification times, not contents."""
        if self.kind == "preset":
            return {"preset": self.spec, "seed": self.seed}
        if self.identity:
            return {"kind": self.kind, "identity": self.identity}
        if self.origin:
            return {"kind": "single-file", "folder": self.path.name}  # named by the file's path, size and time
        files = sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]
        if self.config_path:
            files.append(self.config_path)
        digest = hashlib.sha256()
        for f in files:
            st = f.stat()
            digest.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return {"kind": self.kind, "files": digest.hexdigest()}

    @property
    def pipeline(self) -> Path | None:
        """The diffusers pipeline folder (tokenizer, text encoder, scheduler, VAE beside the UNet), if any."""
        return self.path if self.kind == "pipeline" else None

    def load_unet(self):
        from converter.models import unet_loading

        if self.kind == "preset":
            return unet_loading.load_preset(self.spec, self.seed)
        if self.kind == "pipeline":
            return unet_loading.load_folder(self.path / "unet")
        if self.kind == "folder":
            return unet_loading.load_folder(self.path)
        if self.kind == "weights":
            return unet_loading.load_weights_file(self.path, self.config_path, self.trust_pickle)
        raise AssertionError(f"{self.kind} sources are not loaded into torch")


def resolve(spec: str, config: Path | None = None, trust_pickle: bool = False, seed: int = 0,
            loras: tuple[Lora, ...] = (), vae: Vae | None = None, prediction_type: str | None = None,
            ema: bool = True) -> ModelSource:
    """What `spec` names; with `loras`, `vae` or `prediction_type`, the pipeline it names with them (a folder under
    the cache)."""
    source = _resolve(spec, config, trust_pickle, seed, prediction_type is not None, ema)
    if not loras and vae is None and prediction_type is None:
        return source
    if source.kind != "pipeline":
        option = "--lora" if loras else "--vae" if vae else "--prediction-type"
        raise UserError(f"{option}: '{spec}' is a {source.kind}, not a pipeline; it applies to a diffusers pipeline "
                        "folder, a single-file checkpoint or the demo")
    from converter.models.derived_pipeline import derived_folder

    identity = json.dumps(source.fingerprint(), sort_keys=True)
    folder = derived_folder(source.path, identity, source.name, loras, vae, prediction_type)
    return ModelSource(spec, "pipeline", folder, trust_pickle=trust_pickle, seed=seed, origin=source.origin,
                       identity=hashlib.sha256(f"{identity}{folder.name}".encode()).hexdigest(), loras=loras, vae=vae,
                       prediction_type=prediction_type, ema=ema)


def _resolve(spec: str, config: Path | None, trust_pickle: bool, seed: int, told_prediction: bool,
             ema: bool) -> ModelSource:
    if spec == presets.DEMO:
        from converter.models import demo

        return ModelSource(spec, "pipeline", demo.pipeline_folder(), seed=seed)
    if spec in presets.names():
        return ModelSource(spec, "preset", seed=seed)
    path = Path(spec)
    if not path.exists():
        raise UserError(f"--model '{spec}': no such file or directory, and not a built-in model "
                        f"({', '.join(presets.names())})")
    if config is not None and not config.is_file():
        raise UserError(f"--config '{config}': no such file")
    if path.is_dir():
        kind = "pipeline" if (path / PIPELINE_INDEX).is_file() else "folder"
        if kind == "pipeline":
            _check_pipeline(path)
        found = fp16_only([path / sub for sub in ("unet", "text_encoder", "vae")] if kind == "pipeline" else [path])
        if found:
            print(f"rkconvert: {path}: the fp16 variant's weights alone in {', '.join(f.name for f in found)}; read "
                  "as float32", file=sys.stderr, flush=True)
        return ModelSource(spec, kind, path)
    if path.suffix == ".onnx":
        return ModelSource(spec, "onnx", path)
    from converter.models.unet_loading import STATE_DICT_SUFFIXES

    if path.suffix in single_file.SUFFIXES:
        state_dict = None
        if path.suffix == ".ckpt":
            state_dict = _pickled_checkpoint(path, trust_pickle)
            shapes = {k: tuple(v.shape) for k, v in state_dict.items()} if isinstance(state_dict, dict) else {}
        else:
            shapes = single_file.key_shapes(path)
        if shapes and single_file.holds_pipeline(shapes):
            if config is not None:
                raise UserError(f"--config '{config}': {path} is a single-file checkpoint; its configs are read "
                                "from its weights")
            folder = single_file.pipeline_folder(path, state_dict, ema)
            if single_file.holds_ema(shapes):
                print(f"rkconvert: {path}: holds EMA weights beside the trained ones; its UNet has the "
                      + ("EMA ones (--no-ema: the trained)" if ema else "trained ones (--no-ema)"),
                      file=sys.stderr, flush=True)
            if not told_prediction and ldm_layout.family(shapes, path) == "sd2":
                print(f"rkconvert: {path}: SD 2.x, read as predicting the noise (2.x-base, Turbo); a 768-px model "
                      "predicts v: --prediction-type v_prediction", file=sys.stderr, flush=True)
            return ModelSource(spec, "pipeline", folder, trust_pickle=trust_pickle, seed=seed, origin=path, ema=ema)
    if path.suffix in STATE_DICT_SUFFIXES:
        return ModelSource(spec, "weights", path, config, trust_pickle)
    raise UserError(f"{path}: not a model this tool reads (a diffusers folder, "
                    f"{', '.join(STATE_DICT_SUFFIXES)} weights, or .onnx)")


def _check_pipeline(folder: Path) -> None:
    """A pipeline rkconvert draws with (SD's: one text encoder); an SDXL one is refused, its UNet alone builds."""
    try:
        kind = str(json.loads((folder / PIPELINE_INDEX).read_text()).get("_class_name", ""))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise UserError(f"{folder / PIPELINE_INDEX}: not a readable pipeline index ({e})") from None
    if kind.startswith("StableDiffusionXL"):
        raise UserError(f"{folder / PIPELINE_INDEX}: a {kind}; rkconvert draws with SD 1.x/2.x pipelines and builds "
                        f"an SDXL UNet alone: --model {folder / 'unet'}")


def _pickled_checkpoint(path: Path, trust_pickle: bool):
    """A .ckpt's tensors (a Lightning checkpoint nests them under state_dict): read as tensors and plain values
    only (torch's weights_only), which runs no code from the file; one whose pickle holds other objects needs
    `trust_pickle`."""
    from converter.models.unet_loading import read_weights

    return read_weights(path, trust_pickle)
