"""`rkconvert release`."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command(epilog="Exit status: 0 written, 2 bad input.")
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="NAME.tar.gz to write; its members sit under NAME/. Default: BUILD_DIR.tar.gz beside BUILD_DIR.")
def release(build_dir, out):
    """Bundle a finished build for the board: the .rknn, host programs, report.json/html and
    manifest.json (target, toolkit and compiler version and the librknnrt version the board needs, I/O
    dtypes and layouts, all read from the .rknn itself; accuracy; the build command; the sha256 of every
    file). A model that draws also brings its text encoder and VAE decoder (npu/*.rknn where the build
    made them, cpu/*.onnx), tokenizer and scheduler, and the runner board/run.py. A folder built at
    several sizes (--resolution A,B) gives one bundle of them all (run.py --size). The same build folder
    always gives a byte-identical bundle.
    """
    from converter.release.bundle import default_out
    from converter.release.bundle import release as write_release

    out = out or default_out(build_dir)
    made = write_release(build_dir, out)
    psnr = made.first.accuracy.output_psnr_db
    click.echo(f"{out}: {len(made.files)} files, {made.target} {made.dtype}, needs librknnrt "
               f"{made.librknnrt_version}" + (f", {psnr:.1f} dB vs ONNX Runtime" if psnr is not None else ""))


@click.command(epilog="Exit status: 0 the bundle is what its manifest says, 1 it is not, 2 bad input "
                     "(not a bundle, or unsafe members: absolute paths, '..', links, devices).")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--run", "build_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Then run the bundle's board runner with --simulate BUILD_DIR (the build folder it was released "
                   "from; the simulator cannot run a .rknn file): its UNet output must equal the build's check.")
def verify(bundle, build_dir):
    """Check a release bundle: every file's sha256 and size against manifest.json, no file missing or
    added, the manifest's schema, and the .rknn's own account (target, versions, I/O, node counts)
    agreeing with the manifest. Unsafe members are refused before anything is written."""
    from converter.common.errors import UserError
    from converter.release.verify import smoke_run
    from converter.release.verify import verify as check

    if not bundle.is_file():
        raise UserError(f"{bundle}: no such file")
    made, found = check(bundle)
    if build_dir is not None and not found:
        timing, found = smoke_run(bundle, build_dir)
        if timing:
            click.echo(f"{bundle}: board/run.py --simulate: the UNet's output on the check input equals the build's "
                       f"(PSNR {timing['unet_check']['psnr_db_vs_onnxruntime']:.1f} dB against ONNX Runtime)")
    for line in found:
        click.echo(f"{bundle}: {line}", err=True)
    if found:
        sys.exit(1)
    click.echo(f"{bundle}: verified, {len(made.files)} files match manifest.json; {made.target}, "
               f"rknn-toolkit2 {made.toolkit_version} (board needs librknnrt {made.librknnrt_version})")
