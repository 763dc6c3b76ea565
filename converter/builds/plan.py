"""A build's plan: every choice the request left open, settled once with the reason for it, and read by
the stages after (they never change it).

Two choices need the model in hand: `--dtype auto` reads whether the exported weights are a W8A16
checkpoint, and `--parts auto` and the per-layer report's size read the rewritten graph. So a plan is
settled after stages `export` and `passes` (build/builder.py, `prepare`); what can be refused before
anything is written is refused first (`check`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converter.builds import graph_cut
from converter.builds.pass_selection import select, toolkit_attention
from converter.builds.request import BuildRequest, CalibSettings
from converter.builds.stages.export import Exported
from converter.builds.stages.passes import Rewritten
from converter.common.errors import UserError
from converter.imaging.evaluation import GENERIC, SPEC_FILE, EvalSet, eval_set
from converter.models.unet_interface import UNET
from converter.reports.layer_report import estimated_dump_bytes
from converter.toolkit.job import ToolkitSettings, quantized
from targets.chip import Chip

# --layer-report auto: dump every layer only when the toolkit's text dumps stay under this.
AUTO_LAYER_DUMP_LIMIT = 2 * 2**30
# --quant-algorithm auto picks mmse only for a plain build (no float16 search) of a graph up to this much
# float32 weight. Measured (this machine, bench-results/quantized-demo.json): on the demo (19 MB) mmse's plain build
# is +1.5 dB at the output and its worst image 34.4 dB against normal's 7.1, for 165 s against 77; a search's
# tries reuse normal's step1 (11 s a try on the demo) but rebuild both steps with mmse (38 s). At SD 1.5's size
# mmse's step1 is the cost: on the first 0.82 GiB part of a w8a8 build normal's whole step1 took 5.4 min; mmse's
# had fitted 164 of its 556 tensors after 41 min, up to 140 s each on the 4096-token attention's
# (tools/bench_quant_algorithm.py).
AUTO_MMSE_BYTES = 2**28


@dataclass(frozen=True)
class BuildPlan:
    request: BuildRequest
    graph: str  # what kind of graph is built: unet_interface.UNET, or GRAPH (no calibration, no image check)
    toolkit: ToolkitSettings  # target, the dtype settled, further config() keywords
    dtype_choice: str | None  # why --dtype auto settled on it; None when the dtype was asked for
    algorithm_choice: str | None  # why --quant-algorithm auto settled on toolkit.options' quantized_algorithm
    passes: tuple[str, ...]  # graph_passes.CATALOGUE names, in order
    parts: int  # .rknn files, built and run one after another
    parts_choice: str | None  # why --parts auto settled on it; None when asked for
    calibration: CalibSettings | None  # how the calibration set is recorded; None: a float16 build has none
    check_inputs: str  # gaussian | trajectories
    layer_dumps: bool  # the per-layer report
    layers_skipped: str | None  # why --layer-report auto left it out
    evaluation: EvalSet | None  # what the image check draws; None: no image check

    @property
    def chip(self) -> Chip:
        return self.request.chip

    @property
    def dtype(self) -> str:
        return self.toolkit.dtype

    @property
    def quantized(self) -> bool:
        return self.toolkit.quantized

    @property
    def artifacts(self) -> list[Path]:
        """The .rknn files the build delivers, in run order: the artifact, or its parts."""
        if self.parts == 1:
            return [self.request.artifact]
        return [self.request.artifact.with_suffix(f".part{i}.rknn") for i in range(1, self.parts + 1)]


def check(req: BuildRequest) -> EvalSet | None:
    """Refuse (UserError) what can be refused before anything is written; the evaluation set the image
    check will draw (None: no image check)."""
    pass_names(req)
    check_dtype(req)
    if req.parts not in (1, None) and (req.checks.layer_report == "on" or req.gates.min_layer_cos is not None):
        raise UserError(f"--parts {req.parts}: the per-layer report (--layer-report on, --min-layer-cos) covers a "
                        "model built whole")
    return _evaluation(req)


def check_dtype(req: BuildRequest) -> None:
    if req.dtype != "auto" and req.dtype not in req.chip.dtypes:
        why = req.chip.refused_dtypes.get(req.dtype, "not an RKNN dtype rkconvert builds")
        raise UserError(f"--dtype {req.dtype} for {req.chip.name}: {why}; "
                        f"{req.chip.name} builds {', '.join(req.chip.dtypes)}")
    for option, given in _int8_options(req):
        if given is not None and req.dtype != "auto" and not quantized(req.dtype):
            raise UserError(f"{option} {given} is about int8: --dtype {req.dtype} quantizes nothing (ask for a "
                            "quantized dtype, such as w8a8)")


def _int8_options(req: BuildRequest) -> tuple[tuple[str, object], ...]:
    """The options that only mean something to a quantized build, and their values (None: not asked for;
    `--quant-algorithm auto` asks for nothing a float16 build lacks)."""
    algorithm = None if req.quant_algorithm == "auto" else req.quant_algorithm
    return ("--quant-algorithm", algorithm), ("--toolkit-auto-hybrid", req.hybrid.toolkit_cos)


def pass_names(req: BuildRequest, dtype: str | None = None) -> list[str]:
    """The passes asked for; with `dtype`, without those the target runs for other dtypes only (a list
    given with --passes runs as given)."""
    choice = req.passes
    names = select(req.chip, choice.explicit, choice.enable, choice.skip, choice.attention_tiles)
    return names if dtype is None or choice.explicit is not None else req.chip.passes_for(names, dtype)


def dtype(req: BuildRequest, exported: Exported) -> tuple[str, str | None]:
    """The dtype, and why --dtype auto chose it (None when asked for)."""
    if req.dtype != "auto":
        return req.dtype, None
    return req.chip.auto_dtype(exported.w8a16_layers > 0)


def settle(req: BuildRequest, evaluation: EvalSet | None, chosen: tuple[str, str | None], names: list[str],
           graph: str, rewritten: Rewritten) -> BuildPlan:
    """The plan, once the graph the toolkit gets is known: `rewritten` by the passes `names`, for the dtype
    `chosen` (and why), of a `graph` of that kind."""
    dtype_, dtype_choice = chosen
    if graph != UNET and (quantized(dtype_) or req.checks.inputs == "trajectories"):
        what = f"--dtype {dtype_}" if quantized(dtype_) else "--check-inputs trajectories"
        raise UserError(f"{what}: {req.source.spec} is not a UNet (its inputs are not sample, timestep and "
                        "encoder_hidden_states), and its inputs are recorded along a sampler's trajectories only "
                        "for a UNet: build it float16, checked on Gaussian inputs")
    for option, given in _int8_options(req):
        if given is not None and not quantized(dtype_):
            raise UserError(f"{option} {given} is about int8, and --dtype auto chose {dtype_} ({dtype_choice}): ask "
                            "for a quantized dtype, such as w8a8")
    is_quantized = quantized(dtype_)
    parts, parts_choice = _parts(req, rewritten, is_quantized)
    dumps, skipped = _layer_dumps(req, parts, rewritten)
    trajectories = req.checks.inputs == "trajectories" or (req.checks.inputs == "auto" and is_quantized)
    algorithm, algorithm_choice = _algorithm(req, rewritten, dtype_)
    return BuildPlan(
        request=req, graph=graph,
        toolkit=ToolkitSettings(req.chip.name, dtype_, _toolkit_options(req, dtype_, algorithm),
                                auto_hybrid=req.hybrid.toolkit_cos is not None),
        dtype_choice=dtype_choice, algorithm_choice=algorithm_choice, passes=tuple(names), parts=parts,
        parts_choice=parts_choice,
        calibration=req.calib if is_quantized else None,
        check_inputs="trajectories" if trajectories else "gaussian",
        layer_dumps=dumps, layers_skipped=skipped, evaluation=evaluation)


def _algorithm(req: BuildRequest, rewritten: Rewritten, dtype_: str) -> tuple[str | None, str | None]:
    """The toolkit's quantized_algorithm (None: its default, normal), and why --quant-algorithm auto chose it."""
    if req.quant_algorithm != "auto" or not quantized(dtype_):
        return req.quant_algorithm, None
    if req.hybrid.enabled and req.hybrid.toolkit_cos is None:
        return None, "normal: the float16 search's tries reuse normal's step1 (mmse's rebuild both steps)"
    if rewritten.onnx_bytes > AUTO_MMSE_BYTES:
        return None, (f"normal: {rewritten.onnx_bytes / 2**30:.2g} GiB of weights, where mmse's step1 takes several "
                      "times normal's")
    return "mmse", (f"mmse: a build without the search, {rewritten.onnx_bytes / 2**20:.0f} MiB of weights: clipped "
                    "ranges for little more time")


def _toolkit_options(req: BuildRequest, dtype_: str, algorithm: str | None) -> dict:
    """config() keywords beside the target and the dtype."""
    options = toolkit_attention(req.chip, dtype_, req.passes.attention_tiles)
    if algorithm and quantized(dtype_):
        options = {**options, "quantized_algorithm": algorithm}
    if req.hybrid.toolkit_cos is not None and quantized(dtype_):
        options = {**options, "auto_hybrid_cos_thresh": req.hybrid.toolkit_cos}
    return options


def _parts(req: BuildRequest, rewritten: Rewritten, is_quantized: bool) -> tuple[int, str | None]:
    """--parts auto: whole when the per-layer report is asked for, else as many parts as keep each under
    graph_cut.part_bytes of float32 weights."""
    if req.parts is not None:
        return req.parts, None
    if req.checks.layer_report == "on" or req.gates.min_layer_cos is not None:
        return 1, "the per-layer report needs the model whole"
    count = graph_cut.auto_count(rewritten.onnx_bytes, is_quantized)
    return count, (f"{rewritten.onnx_bytes / 2**30:.1f} GiB of weights, at most "
                   f"{graph_cut.part_bytes(is_quantized) / 2**30:.2g} GiB per "
                   f"{'quantized ' if is_quantized else ''}toolkit build")


def _layer_dumps(req: BuildRequest, parts: int, rewritten: Rewritten) -> tuple[bool, str | None]:
    if req.checks.layer_report != "auto":
        return req.checks.layer_report == "on", None
    if parts > 1:
        return False, "the per-layer report covers a model built whole, not --parts"
    estimate = estimated_dump_bytes(rewritten.onnx)
    if estimate > AUTO_LAYER_DUMP_LIMIT:
        return False, f"per-layer dumps would take ~{estimate / 2**30:.0f} GiB; pass --layer-report on to make them anyway"
    return True, None


def _evaluation(req: BuildRequest) -> EvalSet | None:
    """The evaluation set the image check draws (None: no image check); UserError when a flag needs one
    the model does not bring."""
    evaluation = eval_set(req.source.pipeline) if req.source.pipeline and req.checks.image_check != "off" else None
    if evaluation is None and req.checks.image_check == "on":
        if not req.source.pipeline:
            raise UserError(f"--image-check on: {req.source.spec} is not a text-to-image pipeline (a diffusers "
                            "pipeline folder or a single-file checkpoint)")
        evaluation = GENERIC
    if req.gates.min_prompt_accuracy is not None and (evaluation is None or evaluation.judge is None):
        raise UserError(f"--min-prompt-accuracy: {req.source.spec} brings no judge of its images (a pipeline "
                        f"folder's {SPEC_FILE} names one; the demo's does)")
    return evaluation
