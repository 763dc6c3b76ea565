"""`rkconvert release`: a finished build folder as one reproducible .tar.gz for the board."""

from __future__ import annotations

from pathlib import Path

from converter.board.manifest import NAME as MANIFEST, Accuracy, Check, Manifest, Pipeline
from converter.builds.finished import FinishedBuild
from converter.common.errors import UserError
from converter.imaging.evaluation import default_drawing, eval_set
from converter.release import manifest, sized, tarball
from converter.reports.build_report import SizesIndex, load
from converter.toolkit import rknn_file

SUFFIX = ".tar.gz"
BOARD = Path(__file__).parents[1] / "board"


def default_out(build_dir: Path) -> Path:
    return build_dir.resolve().parent / f"{build_dir.resolve().name}{SUFFIX}"


def _check_files(build: FinishedBuild) -> tuple[dict[str, Path], Check]:
    """The build's check sample 0: its inputs, ONNX Runtime's output and the simulator's, so the runner
    can check one UNet step against both."""
    inputs, outputs = build.reference.samples[0], build.reference.outputs[0]
    files = {f"check/input-{name}.npy": path for name, path in inputs.items()}
    files.update({f"check/reference-{name}.npy": path for name, path in outputs.items()})
    files.update({f"check/simulator-{name}.npy": path for name, path in zip(outputs, build.rknn.simulator[0])})
    return files, Check("check", list(inputs), list(outputs))


def _pipeline_files(build: FinishedBuild) -> tuple[dict[str, Path], Pipeline | None]:
    """For a model that draws: its text encoder and VAE decoder as ONNX (for the board's CPU) and as .rknn where
    the build made them, tokenizer and scheduler config, and what the board's loop needs to know."""
    folder = build.pipeline
    if folder is None:
        return {}, None
    tokenizer = folder / "tokenizer" / "tokenizer.json"
    if not tokenizer.is_file():
        raise UserError(f"{folder / 'tokenizer'}: no tokenizer.json (the board reads the tokenizers format)")
    traced, declared = build.traced, eval_set(folder)
    conditioning = build.export.signature.sources()
    steps, guidance_scale = default_drawing(folder, "guidance" in conditioning.values())
    files = {f"cpu/{name}.onnx": path for name, path in traced.onnx.items()}
    files.update({"tokenizer/tokenizer.json": tokenizer,
                  "scheduler/scheduler_config.json": folder / "scheduler" / "scheduler_config.json"})
    npu = {}
    for name, built in build.npu_models.items():
        (artifact,) = built.artifacts
        npu[name] = manifest.run(f"npu/{name}.rknn", rknn_file.read(artifact), build="",
                                 accuracy=Accuracy(built.report.accuracy.psnr_db, built.report.accuracy.cosine))
        files[npu[name].rknn] = artifact
    return files, Pipeline(latent_shape=traced.latent_shape, vae_scaling_factor=traced.vae_scaling_factor,
                           steps=steps, guidance_scale=guidance_scale,
                           prompts=[p.prompt for p in declared.prompts] if declared else [], npu=npu,
                           cpu={name: f"cpu/{name}.onnx" for name in traced.onnx},
                           conditioning=conditioning)


def contents(build_dir: Path) -> tuple[Manifest, dict[str, Path | bytes]]:
    """(manifest, bundle files by name) for a finished build, or for the builds of several sizes
    (--resolution A,B,...: release/sized.py); UserError naming what is missing."""
    index = load(build_dir)
    if isinstance(index, SizesIndex):
        return sized.combined({int(size): contents(build_dir / entry.folder) for size, entry in index.sizes.items()})
    build = FinishedBuild.open(build_dir, "only a finished build can be released")
    report, artifacts = build.report, build.artifacts
    declared = [rknn_file.read(a) for a in artifacts]
    files: dict[str, Path | bytes] = dict(zip(manifest.rknn_names(len(artifacts)), artifacts))
    files.update({"report.json": build_dir / "report.json", "report.html": build_dir / "report.html"})
    files.update({program: build_dir / program for program in report.delivered.host_programs})
    files.update({f"board/{p.name}": p for p in sorted(BOARD.glob("*.py")) if p.name != "__init__.py"})
    check_files, check = _check_files(build)
    pipeline_files, pipeline = _pipeline_files(build)
    files.update(check_files)
    files.update(pipeline_files)
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: missing from the build folder; rebuild {build_dir}")
    return manifest.make(report, declared, files, check, pipeline), files


def release(build_dir: Path, out: Path) -> Manifest:
    """Write `out` (NAME.tar.gz, every member under NAME/); returns its manifest."""
    if not out.name.endswith(SUFFIX) or out.name == SUFFIX:
        raise UserError(f"{out}: a release is written as NAME{SUFFIX}")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent}: no such folder for the release")
    made, files = contents(build_dir)
    root = out.name[:-len(SUFFIX)]
    members = {f"{root}/{name}": content for name, content in files.items()}
    members[f"{root}/{MANIFEST}"] = made.dumps().encode()
    tarball.write(out, members)
    return made
