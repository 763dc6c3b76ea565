"""`rkconvert verify`: a bundle is what its manifest says — every checksum, no file missing or added,
the manifest's schema, and the .rknn's own account of itself agreeing with the manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from converter.board.manifest import NAME, Manifest, ManifestError, Run
from converter.common.digest import sha256
from converter.common.errors import UserError
from converter.release import tarball
from converter.toolkit import rknn_file

# Manifest keys each .rknn file itself must agree with: the bundle's, and its own run's.
BUNDLE_WIDE = ("target", "toolkit_version", "compiler_version")
RUN_KEYS = ("inputs", "outputs", "op_counts")


def verify(bundle: Path) -> tuple[Manifest | None, list[str]]:
    """(the manifest, what is wrong: one line each naming the member); UserError for unsafe tarballs."""
    members = tarball.safe_members(bundle)
    roots = {PurePosixPath(m.name).parts[0] for m in members}
    if len(roots) != 1:
        return None, [f"{bundle}: members under {len(roots)} top folders ({', '.join(sorted(roots))}); expected one"]
    root = roots.pop()
    sums, raw_manifest = {}, None
    with tempfile.TemporaryDirectory(prefix="rkconvert-verify-") as tmp:
        copies = {}  # every .rknn, kept to read what it declares once the manifest says which are ours
        for info, chunks in tarball.chunks(bundle):
            name = str(PurePosixPath(info.name).relative_to(root))
            if name == NAME:
                raw_manifest = b"".join(chunks)
                continue
            if name.endswith(".rknn"):
                copies[name] = Path(tmp) / f"{len(copies)}.rknn"
            with open(copies.get(name, os.devnull), "wb") as sink:
                sums[name] = (sha256(_tee(chunks, sink)), info.size)
        if raw_manifest is None:
            return None, [f"{NAME}: missing"]
        try:
            made = Manifest.loads(raw_manifest)
        except ManifestError as e:
            return None, [str(e)]
        found = _files(made, sums)
        for run in made.all_runs():
            if run.rknn not in copies:
                continue  # named missing above
            try:
                found += _declared(made, run, rknn_file.read(copies[run.rknn]))
            except UserError as e:
                found.append(str(e).replace(str(copies[run.rknn]), run.rknn))
    return made, found


def _files(made: Manifest, sums: dict[str, tuple[str, int]]) -> list[str]:
    listed = made.files
    found = [f"{name}: listed in the manifest, not in the bundle" for name in sorted(set(listed) - set(sums))]
    found += [f"{name}: in the bundle, not in the manifest" for name in sorted(set(sums) - set(listed))]
    found += [f"{name}: sha256 differs from the manifest" for name in sorted(set(listed) & set(sums))
              if (listed[name].sha256, listed[name].bytes) != sums[name]]
    return found


def _declared(made: Manifest, run: Run, declared: rknn_file.RknnFile) -> list[str]:
    """What `run`'s .rknn says of itself against the manifest: the bundle's target and versions, the run's
    tensors and node counts."""
    said = {**{key: getattr(made, key) for key in BUNDLE_WIDE}, **run.to_json()}
    return [f"{run.rknn}: the file says {key} {getattr(declared, key)!r}, the manifest {said[key]!r}"
            for key in (*BUNDLE_WIDE, *RUN_KEYS) if said[key] != getattr(declared, key)]


def _tee(chunks, sink):
    for chunk in chunks:
        sink.write(chunk)
        yield chunk



def smoke_run(bundle: Path, build_dir: Path, timeout: float = 1800) -> tuple[dict | None, list[str]]:
    """The bundle's own runner, unpacked, with `--simulate build_dir`: its UNet output on the check
    input must equal the build's simulator output. Call after verify() found nothing wrong."""
    with tempfile.TemporaryDirectory(prefix="rkconvert-run-") as tmp:
        with tarfile.open(bundle, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        root = next(Path(tmp).iterdir())
        ran = subprocess.run([sys.executable, "board/run.py", "--simulate", str(build_dir.resolve()),
                              "--skip-checksums", "--out", str(Path(tmp) / "run")],
                             cwd=root, capture_output=True, text=True, timeout=timeout)
        if ran.returncode != 0:
            return None, [f"board/run.py --simulate: exit {ran.returncode}: "
                          f"{(ran.stderr.strip().splitlines() or ['no message'])[-1]}"]
        timing = json.loads((Path(tmp) / "run" / "timing.json").read_text())
    differs = timing["unet_check"]["max_abs_vs_build_simulator"]
    return timing, ([] if differs == 0 else [f"board/run.py --simulate: the UNet's output on the check input differs "
                                             f"from the build's by up to {differs:.3g}"])
