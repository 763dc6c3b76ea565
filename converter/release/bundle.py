"""`rkconvert release`: a finished build folder as one reproducible .tar.gz for the board."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from converter.common.errors import UserError
from converter.imaging.evaluation import eval_set
from converter.models import cpu_parts
from converter.pipeline.finished import FinishedBuild
from converter.release import manifest, tarball
from converter.toolkit import rknn_file

SUFFIX = ".tar.gz"
BOARD = Path(__file__).with_name("board")
CPU_CACHE = "cpu"  # in the build folder: the CPU parts traced once, so every release ships the same bytes


def default_out(build_dir: Path) -> Path:
    return build_dir.resolve().parent / f"{build_dir.resolve().name}{SUFFIX}"


def _check_files(build: FinishedBuild) -> tuple[dict[str, Path], dict]:
    """The build's check sample 0: its inputs, ONNX Runtime's output and the simulator's, so the runner
    can check one UNet step against both."""
    inputs, outputs = build.reference.samples[0], build.reference.outputs[0]
    files = {f"check/input-{name}.npy": path for name, path in inputs.items()}
    files.update({f"check/reference-{name}.npy": path for name, path in outputs.items()})
    files.update({f"check/simulator-{name}.npy": path for name, path in zip(outputs, build.rknn.simulator[0])})
    return files, {"inputs": list(inputs), "outputs": list(outputs)}


def _pipeline_files(build_dir: Path, report: dict) -> tuple[dict[str, Path], dict | None]:
    """Text encoder and VAE decoder as ONNX, tokenizer and scheduler configs, for a model that draws."""
    if not report.get("pipeline"):
        return {}, None
    folder, cache = Path(report["pipeline"]), build_dir / CPU_CACHE
    facts_path = cache / "pipeline.json"
    key = _cpu_key(folder, report["resolution"])
    cached = json.loads(facts_path.read_text()) if facts_path.is_file() else {}
    if cached.get("key") != key:
        shutil.rmtree(cache, ignore_errors=True)
        facts = cpu_parts.export(folder, report["resolution"], cache)
        facts_path.write_text(json.dumps({**facts, "key": key}))
    tokenizer = folder / "tokenizer" / "tokenizer.json"
    if not tokenizer.is_file():
        raise UserError(f"{folder / 'tokenizer'}: no tokenizer.json (the board reads the tokenizers format)")
    declared = eval_set(folder)
    traced = {k: v for k, v in json.loads(facts_path.read_text()).items() if k != "key"}
    facts = {**traced, "steps": declared.steps if declared else 20,
             "guidance_scale": declared.guidance_scale if declared else 7.5,
             "prompts": [p.prompt for p in declared.prompts] if declared else []}
    return {f"cpu/{cpu_parts.TEXT_ENCODER}": cache / cpu_parts.TEXT_ENCODER,
            f"cpu/{cpu_parts.VAE_DECODER}": cache / cpu_parts.VAE_DECODER,
            "tokenizer/tokenizer.json": tokenizer,
            "scheduler/scheduler_config.json": folder / "scheduler" / "scheduler_config.json"}, facts


def _cpu_key(folder: Path, resolution: int) -> dict:
    """What the traced CPU parts depend on: the resolution and the bytes of the encoder's and VAE's files."""
    files = sorted(p for part in ("text_encoder", "vae") for p in (folder / part).glob("*") if p.is_file())
    return {"resolution": resolution,
            "files": {f"{p.parent.name}/{p.name}": manifest.sha256(manifest.file_chunks(p)) for p in files}}


def contents(build_dir: Path) -> tuple[dict, dict[str, Path | bytes]]:
    """(manifest, bundle files by name) for a finished build; UserError naming what is missing."""
    build = FinishedBuild.open(build_dir, "only a finished build can be released")
    report, artifacts = build.report, build.artifacts
    declared = [rknn_file.read(a).to_json() for a in artifacts]
    files: dict[str, Path | bytes] = dict(zip(manifest.rknn_names(len(artifacts)), artifacts))
    files.update({"report.json": build_dir / "report.json", "report.html": build_dir / "report.html"})
    files.update({program: build_dir / program for program in report.get("host_programs", [])})
    files.update({f"board/{p.name}": p for p in sorted(BOARD.glob("*.py")) if p.name != "__init__.py"})
    check_files, check = _check_files(build)
    pipeline_files, pipeline = _pipeline_files(build_dir, report)
    files.update(check_files)
    files.update(pipeline_files)
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: missing from the build folder; rebuild {build_dir}")
    return manifest.make(report, declared, files, check, pipeline), files


def release(build_dir: Path, out: Path) -> dict:
    """Write `out` (NAME.tar.gz, every member under NAME/); returns its manifest."""
    if not out.name.endswith(SUFFIX) or out.name == SUFFIX:
        raise UserError(f"{out}: a release is written as NAME{SUFFIX}")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: no such folder for the release")
    made, files = contents(build_dir)
    root = out.name[:-len(SUFFIX)]
    members = {f"{root}/{name}": content for name, content in files.items()}
    members[f"{root}/{manifest.NAME}"] = (json.dumps(made, indent=2, sort_keys=True) + "\n").encode()
    tarball.write(out, members)
    return made
