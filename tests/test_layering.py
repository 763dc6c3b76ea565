"""Imports flow one way, down this list: a package imports only packages of the layers below its own.

The packages beside converter (targets, calib_data, graph_passes) may use converter.common only.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIBLINGS = ("targets", "calib_data", "graph_passes")
LAYERS = (
    ("cli",),
    ("fuzz", "matrix", "release", "generate", "lint", "quantize"),  # the verbs
    ("diagnose",),  # fuzz diagnoses what it finds
    ("builds",),  # a build: its request, plan and stages
    ("imaging",),  # drawing with a diffusers pipeline, a UNet replaced
    ("models",),
    ("mixed_precision", "w8a16", "reports"),
    ("toolkit",),  # rknn-toolkit2, in a child process
    ("common", "board"),  # board: the runner shipped in every bundle, which the host draws with too
)
LAYER = {f"converter.{name}": depth for depth, names in enumerate(LAYERS) for name in names}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _unit(module: str) -> str | None:
    """converter.builds.stages.rknn -> converter.build; others (converter itself, torch) None."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "converter" and len(parts) > 1 else None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "converter").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        unit = _unit(module)
        if unit is not None:
            graph.setdefault(unit, set()).update({_unit(m) for m in _imports(path)} - {None, unit})
    return graph


def test_every_package_has_a_layer():
    assert set(_graph()) == set(LAYER)


def test_imports_run_only_down_the_layers():
    upward = [f"{unit} imports {dep}" for unit, deps in _graph().items() for dep in sorted(deps)
              if LAYER[dep] <= LAYER[unit]]
    assert not upward


def test_common_is_the_bottom_and_siblings_use_only_it():
    assert _graph()["converter.common"] == set()
    for sibling in SIBLINGS:
        for path in (ROOT / sibling).rglob("*.py"):
            used = {_unit(m) for m in _imports(path)} - {None}
            assert used <= {"converter.common"}, f"{path.relative_to(ROOT)} imports {sorted(used)}"


def test_stage_keys_cover_every_source_package():
    """A changed pass or exporter must invalidate the stages it made (the key hashes these files)."""
    from converter.builds.build_dir import sources

    found = {path.relative_to(ROOT).parts[0] for path in sources()}
    assert found == {"converter", "graph_passes", "calib_data", "targets"}
    assert ROOT / "graph_passes" / "framework.py" in sources()
    assert ROOT / "converter" / "builds" / "build_dir.py" in sources()


def test_only_the_toolkit_package_imports_rknn():
    """The toolkit can die by a signal: one package drives it, always in a child process."""
    for package in ("converter", *SIBLINGS, "tools"):
        for path in (ROOT / package).rglob("*.py"):
            if path.is_relative_to(ROOT / "converter" / "toolkit"):
                continue
            rknn = {m for m in _imports(path) if m == "rknn" or m.startswith("rknn.")}
            assert not rknn, f"{path.relative_to(ROOT)} imports {sorted(rknn)}"


def test_the_toolkit_package_uses_only_common():
    assert _graph()["converter.toolkit"] <= {"converter.common"}


def test_the_board_library_imports_nothing_of_converter():
    assert not _graph()["converter.board"]


def test_only_their_owners_read_report_json_and_manifest_json_by_key():
    """Commands read a build's report as a BuildReport (converter/reports/build_report.py) and a bundle's
    manifest as a Manifest (converter/board/manifest.py): one owner each for their JSON."""
    import re

    by_key = re.compile(r"\b(?:report|index|made|manifest|bundled)(?:\[\s*['\"]|\.get\(\s*['\"])")
    owners = (ROOT / "converter" / "reports", ROOT / "converter" / "board" / "manifest.py")
    found = [f"{path.relative_to(ROOT)}:{number}" for package in ("converter", "tools")
             for path in sorted((ROOT / package).rglob("*.py")) if not any(path.is_relative_to(o) for o in owners)
             for number, line in enumerate(path.read_text().splitlines(), start=1) if by_key.search(line)]
    assert not found
