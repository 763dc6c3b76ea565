"""`rkconvert release`: a finished build folder as one reproducible .tar.gz for the board."""

from __future__ import annotations

import json
from pathlib import Path

from converter.common.errors import UserError
from converter.release import manifest, tarball
from converter.reports.compare_builds import load_report
from targets import rknn_file

SUFFIX = ".tar.gz"


def default_out(build_dir: Path) -> Path:
    return build_dir.resolve().parent / f"{build_dir.resolve().name}{SUFFIX}"


def contents(build_dir: Path) -> tuple[dict, dict[str, Path | bytes]]:
    """(manifest, bundle files by name) for a finished build; UserError naming what is missing."""
    report = load_report(build_dir)
    if report.get("status") != "ok":
        raise UserError(f"{build_dir / 'report.json'}: the build did not finish (status {report.get('status')!r}); "
                        "only a finished build can be released")
    artifact = build_dir / report["artifact"]
    declared = rknn_file.read(artifact).to_json()
    files: dict[str, Path | bytes] = {manifest.RKNN: artifact, "report.json": build_dir / "report.json",
                                      "report.html": build_dir / "report.html"}
    files.update({program: build_dir / program for program in report.get("host_programs", [])})
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: missing from the build folder; rebuild {build_dir}")
    return manifest.make(report, declared, files), files


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
