"""manifest.json, a release bundle's account of itself, and its one reader and writer: `rkconvert release`
writes it, `verify` and `run.py --simulate` read it on the host, run.py reads it on the board (plain Python:
the board has no rkconvert).

Its layout: what the whole bundle shares (versions, target, dtype, every file's sha256) and what the
runner draws with at the bundle's first size, side by side at the top; a bundle of several sizes adds
`sizes`, each size's own entry (`ForSize`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace

SCHEMA = "rkconvert-bundle/2"  # 2: pipeline.conditioning
NAME = "manifest.json"
_NOT_TEXT = ("files", "first", "sizes", "loras", "vae")  # the Manifest's fields that are not plain strings


class ManifestError(ValueError):
    """manifest.json is not one this runner reads: one line naming what is wrong."""


def _take(raw: dict, key: str, kinds, where: str, optional: bool = False):
    """raw[key] when it is one of `kinds` (None too when `optional`), else ManifestError naming it."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if key not in raw:
        if optional:
            return None
        raise ManifestError(f"{where}: no {key!r}")
    value = raw[key]
    if value is None and optional:
        return None
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        raise ManifestError(f"{where}: {key!r} is {type(value).__name__}")
    return value


def _object(raw, where: str) -> dict:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: not a JSON object")
    return raw


def _flat(cls, raw, where: str, **kinds):
    """A record of plain fields read from the JSON object `raw`: strings, unless `kinds` names others."""
    raw = _object(raw, where)
    return cls(**{f.name: _take(raw, f.name, kinds.get(f.name, str), where) for f in fields(cls)})


def _optional(cls, raw: dict, key: str, where: str):
    """cls read from raw[key], or None where it is null or absent."""
    found = _take(raw, key, dict, where, optional=True)
    return None if found is None else cls.from_json(found, f"{where}: {key}")


@dataclass(frozen=True)
class Tensor:
    """A tensor an .rknn takes or hands on, as the file declares it: the source model's shape, the runtime's
    dtype and layout."""

    name: str
    shape: list[int] | None
    dtype: str | None
    layout: str | None

    @classmethod
    def from_json(cls, raw, where: str) -> Tensor:
        raw = _object(raw, where)
        return cls(_take(raw, "name", str, where), _take(raw, "shape", list, where, optional=True),
                   _take(raw, "dtype", str, where, optional=True), _take(raw, "layout", str, where, optional=True))


@dataclass(frozen=True)
class Accuracy:
    """The build's figures against ONNX Runtime on its check inputs (a pipeline model's: PSNR and cosine)."""

    output_psnr_db: float | None  # None: bit-exact
    output_cosine: float | None
    output_max_abs: float | None = None
    check_inputs: str | None = None  # what the check inputs were: gaussian | trajectories
    min_psnr: float | None = None  # the build's gate

    @classmethod
    def from_json(cls, raw, where: str) -> Accuracy:
        raw = _object(raw, where)
        return cls(**{f.name: _take(raw, f.name, str if f.name == "check_inputs" else (int, float), where,
                                    optional=True) for f in fields(cls)})


@dataclass(frozen=True)
class Run:
    """One .rknn the runner loads: its file in the bundle, the tensors it takes and hands on (by name: a
    model in parts feeds each part from the graph's inputs and the earlier parts' outputs), its node
    counts and constant bytes. A pipeline model's run also has its accuracy and its build folder."""

    rknn: str
    inputs: list[Tensor]
    outputs: list[Tensor]
    op_counts: dict[str, int]
    constant_bytes: dict[str, int]
    accuracy: Accuracy | None = None
    build: str | None = None  # its build folder, under the folder `run.py --simulate` is given

    @classmethod
    def from_json(cls, raw, where: str) -> Run:
        raw = _object(raw, where)
        return cls(rknn=_take(raw, "rknn", str, where),
                   inputs=[Tensor.from_json(t, f"{where}: inputs") for t in _take(raw, "inputs", list, where)],
                   outputs=[Tensor.from_json(t, f"{where}: outputs") for t in _take(raw, "outputs", list, where)],
                   op_counts=_take(raw, "op_counts", dict, where), constant_bytes=_take(raw, "constant_bytes", dict, where),
                   accuracy=_optional(Accuracy, raw, "accuracy", where),
                   build=_take(raw, "build", str, where, optional=True))

    def to_json(self) -> dict:
        made = {f.name: getattr(self, f.name) for f in fields(self)}
        made.update(inputs=[vars(t) for t in self.inputs], outputs=[vars(t) for t in self.outputs],
                    accuracy=vars(self.accuracy) if self.accuracy else None)
        return {k: v for k, v in made.items() if v is not None or k not in ("accuracy", "build")}

    def moved(self, at, build: str | None = None) -> Run:
        """This run with its file's name mapped by `at` (and its build folder `build`, when given)."""
        return replace(self, rknn=at(self.rknn), build=self.build if build is None else build)


@dataclass(frozen=True)
class Check:
    """The build's check sample shipped in the bundle: one UNet step the runner compares with ONNX Runtime's
    output (and with the build's simulator output)."""

    folder: str
    inputs: list[str]
    outputs: list[str]

    @classmethod
    def from_json(cls, raw, where: str) -> Check:
        raw = _object(raw, where)
        return cls(_take(raw, "folder", str, where), _take(raw, "inputs", list, where), _take(raw, "outputs", list, where))


@dataclass(frozen=True)
class Pipeline:
    """What the board's text-to-image loop needs beside the UNet: where the text encoder and VAE decoder run
    (`npu`: the ones with a .rknn; `cpu`: every one as ONNX), the model's own drawing settings, and how the
    loop makes each UNet input beyond sample, timestep and text states (`conditioning`: input name -> its
    source, rkconvert's models/family.py: "guidance", an LCM UNet's guidance-scale embedding)."""

    latent_shape: list[int]
    vae_scaling_factor: float
    steps: int
    guidance_scale: float
    prompts: list[str]
    npu: dict[str, Run]
    cpu: dict[str, str]
    conditioning: dict[str, str]

    @classmethod
    def from_json(cls, raw, where: str) -> Pipeline:
        raw = _object(raw, where)
        number = (int, float)
        return cls(latent_shape=_take(raw, "latent_shape", list, where),
                   vae_scaling_factor=_take(raw, "vae_scaling_factor", number, where),
                   steps=_take(raw, "steps", int, where), guidance_scale=_take(raw, "guidance_scale", number, where),
                   prompts=_take(raw, "prompts", list, where),
                   npu={name: Run.from_json(run, f"{where}: npu: {name}")
                        for name, run in _take(raw, "npu", dict, where).items()},
                   cpu=_take(raw, "cpu", dict, where), conditioning=_take(raw, "conditioning", dict, where))

    def to_json(self) -> dict:
        return {**vars(self), "npu": {name: run.to_json() for name, run in self.npu.items()}}


@dataclass(frozen=True)
class ForSize:
    """What the runner draws with at one size: the UNet's .rknn (or its parts, in run order), its host
    programs, its check sample and accuracy, and the pipeline's models at that size."""

    resolution: int | None
    rknn: str
    inputs: list[Tensor]  # the first run's
    outputs: list[Tensor]  # the last run's
    op_counts: dict[str, int]  # all runs'
    constant_bytes: dict[str, int]
    parts: list[Run] | None  # a model built in parts (--parts); None: the one .rknn above
    host_programs: list[str]
    accuracy: Accuracy
    images: dict | None  # the build's image check: its summary figures
    build_command: str | None
    check: Check
    pipeline: Pipeline | None
    build: str  # the build folder of this size, under the folder `run.py --simulate` is given

    @classmethod
    def from_json(cls, raw, where: str) -> ForSize:
        raw = _object(raw, where)
        parts = _take(raw, "parts", list, where, optional=True)
        return cls(resolution=_take(raw, "resolution", int, where, optional=True), rknn=_take(raw, "rknn", str, where),
                   inputs=[Tensor.from_json(t, f"{where}: inputs") for t in _take(raw, "inputs", list, where)],
                   outputs=[Tensor.from_json(t, f"{where}: outputs") for t in _take(raw, "outputs", list, where)],
                   op_counts=_take(raw, "op_counts", dict, where, optional=True) or {},
                   constant_bytes=_take(raw, "constant_bytes", dict, where, optional=True) or {},
                   parts=None if parts is None else [Run.from_json(p, f"{where}: parts") for p in parts],
                   host_programs=_take(raw, "host_programs", list, where),
                   accuracy=Accuracy.from_json(_take(raw, "accuracy", dict, where), f"{where}: accuracy"), images=_take(raw, "images", dict, where, optional=True),
                   build_command=_take(raw, "build_command", str, where, optional=True),
                   check=Check.from_json(_take(raw, "check", dict, where), f"{where}: check"),
                   pipeline=_optional(Pipeline, raw, "pipeline", where),
                   build=_take(raw, "build", str, where, optional=True) or "")

    def to_json(self) -> dict:
        made = {f.name: getattr(self, f.name) for f in fields(self)}
        made.update(inputs=[vars(t) for t in self.inputs], outputs=[vars(t) for t in self.outputs],
                    parts=None if self.parts is None else [p.to_json() for p in self.parts],
                    check=vars(self.check), accuracy=vars(self.accuracy), pipeline=self.pipeline.to_json() if self.pipeline else None)
        return made

    def runs(self) -> list[Run]:
        """What the runner loads for the UNet, in order: the parts, or the one .rknn described above."""
        return self.parts or [Run(self.rknn, self.inputs, self.outputs, self.op_counts, self.constant_bytes)]

    def npu_models(self) -> dict[str, Run]:
        """The pipeline's models that have a .rknn in the bundle, by name (text_encoder, vae_decoder)."""
        return self.pipeline.npu if self.pipeline else {}


@dataclass(frozen=True)
class LoraUsed:
    """A LoRA fused into the model before it was built (rkconvert build --lora): its file's name and sha256,
    and the scale it was fused at."""

    file: str
    sha256: str
    scale: float

    @classmethod
    def from_json(cls, raw, where: str) -> LoraUsed:
        return _flat(cls, raw, where, scale=(int, float))


@dataclass(frozen=True)
class VaeUsed:
    """A VAE put in place of the model's own before it was built (rkconvert build --vae): its file or folder
    name, its weights' sha256 and its diffusers class (AutoencoderKL, AutoencoderTiny)."""

    file: str
    sha256: str
    kind: str

    @classmethod
    def from_json(cls, raw, where: str) -> VaeUsed:
        return _flat(cls, raw, where)


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    schema: str
    rkconvert_version: str
    target: str
    toolkit_version: str
    compiler_version: str
    # A model built by one toolkit fails on another runtime ("Invalid RKNN model version 6"; a 2.3.0
    # model crashed on librknnrt 2.3.2): the board's librknnrt must be the toolkit's version.
    librknnrt_version: str
    dtype: str
    model: str
    files: dict[str, FileEntry]  # every other file of the bundle, by its name in the bundle
    first: ForSize  # the bundle's first (or only) size
    sizes: dict[str, ForSize] | None = None  # a bundle of several sizes: each one's, by its resolution in pixels
    loras: list[LoraUsed] = field(default_factory=list)
    vae: VaeUsed | None = None

    @classmethod
    def from_json(cls, raw) -> Manifest:
        raw = _object(raw, NAME)
        if (schema := _take(raw, "schema", str, NAME)) != SCHEMA:
            raise ManifestError(f"{NAME}: schema {schema!r}, expected {SCHEMA!r}: release the build again")
        head = {f.name: _take(raw, f.name, str, NAME) for f in fields(cls) if f.name not in _NOT_TEXT}
        files = {}
        for name, entry in _take(raw, "files", dict, NAME).items():
            if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                    and isinstance(entry.get("bytes"), int)):
                raise ManifestError(f"{NAME}: files[{name!r}] needs sha256 and bytes")
            files[name] = FileEntry(entry["sha256"], entry["bytes"])
        sizes = _take(raw, "sizes", dict, NAME, optional=True)
        return cls(**head, files=files, first=ForSize.from_json(raw, NAME),
                   sizes=None if sizes is None else {size: ForSize.from_json(one, f"{NAME}: sizes: {size}")
                                                     for size, one in sizes.items()},
                   loras=[LoraUsed.from_json(one, f"{NAME}: loras") for one in
                          _take(raw, "loras", list, NAME, optional=True) or []],
                   vae=_optional(VaeUsed, raw, "vae", NAME))

    @classmethod
    def loads(cls, text: bytes | str) -> Manifest:
        try:
            return cls.from_json(json.loads(text))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ManifestError(f"{NAME}: not JSON ({e})") from None

    def to_json(self) -> dict:
        head = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_TEXT}
        made = {**head, **self.first.to_json(), "files": {name: vars(e) for name, e in sorted(self.files.items())},
                "loras": [vars(one) for one in self.loras], "vae": vars(self.vae) if self.vae else None}
        if self.sizes is not None:
            made["sizes"] = {size: one.to_json() for size, one in self.sizes.items()}
        return made

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    def resolutions(self) -> list[str]:
        return sorted(self.sizes, key=int) if self.sizes else [str(self.first.resolution)]

    def at(self, size: int | None) -> ForSize:
        """What the runner draws with at `size` pixels (None: the first size); ManifestError for a size the
        bundle does not have."""
        if size is None or str(size) == str(self.first.resolution):
            return self.first
        if not self.sizes or str(size) not in self.sizes:
            raise ManifestError(f"--size {size}: this bundle draws at "
                                f"{', '.join(sorted(self.resolutions(), key=int))} px")
        return self.sizes[str(size)]

    def all_runs(self) -> list[Run]:
        """Every .rknn the bundle runs (its UNet's, its pipeline models', of every size), each once."""
        found = {}
        for one in [self.first, *(self.sizes or {}).values()]:
            for run in [*one.runs(), *one.npu_models().values()]:
                found.setdefault(run.rknn, run)
        return list(found.values())
