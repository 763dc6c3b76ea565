"""`rkconvert compare`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from converter.cli.exits import EXIT_CODES


@click.command(epilog=EXIT_CODES)
@click.argument("build_a", type=click.Path(path_type=Path))
@click.argument("build_b", type=click.Path(path_type=Path))
@click.option("--top", type=click.IntRange(1), default=20, show_default=True, help="Layers shown in the table.")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write every paired layer (both rows and the SQNR change) to this file.")
def compare(build_a, build_b, top, json_path):
    """Put two builds side by side: outputs, then every layer, largest SQNR change first.

    BUILD_A and BUILD_B are build folders (or their report.json). Layers pair up by the toolkit's
    layer name, the rest by the ONNX tensor they match, so the same model built with different
    passes or toolkits lines up.
    """
    from converter.common.json_files import write_json
    from converter.reports.build_report import load_build
    from converter.reports.compare_builds import join_layers, print_comparison

    a, b = load_build(build_a).to_json(), load_build(build_b).to_json()
    joined = join_layers(a.get("layers") or [], b.get("layers") or [])
    print_comparison(Console(), a, b, (str(build_a), str(build_b)), joined, top)
    if json_path:
        write_json(json_path, {"a": str(build_a), "b": str(build_b), "layers": joined})
