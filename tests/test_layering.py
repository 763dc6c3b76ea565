"""Imports flow one way: cli -> verbs -> pipeline stages -> models, reports, quantization -> toolkit -> common.

The packages beside converter (targets, calib_data, graph_passes) may use converter.common only, and
no two of converter's subpackages import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIBLINGS = ("targets", "calib_data", "graph_passes")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


# The board runner's libraries (samplers, noise, tokenizer, PNG): shipped in every bundle, they import nothing
# of converter, and the host draws with the same samplers: a leaf. Its run.py reaches the host's rkconvert
# under --simulate: part of converter.release.
BOARD, BOARD_PROGRAM = "converter.release.board", "converter.release.board.run"


def _unit(module: str) -> str | None:
    """converter.pipeline.stages.rknn -> converter.pipeline; converter.cli -> converter.cli; the board's
    libraries -> BOARD; others None."""
    parts = module.split(".")
    if parts[0] != "converter" or len(parts) == 1:
        return None
    return BOARD if module.startswith(BOARD) and module != BOARD_PROGRAM else ".".join(parts[:2])


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "converter").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        unit = _unit(module)
        deps = {_unit(m) for m in _imports(path)} - {None, unit}
        graph.setdefault(unit, set()).update(deps)
    return graph


def test_no_two_subpackages_import_each_other():
    graph = _graph()
    visiting, done = [], set()

    def visit(unit: str) -> None:
        assert unit not in visiting, f"import cycle: {' -> '.join(visiting[visiting.index(unit):] + [unit])}"
        if unit in done:
            return
        visiting.append(unit)
        for dep in sorted(graph.get(unit, ())):
            visit(dep)
        visiting.pop()
        done.add(unit)

    for unit in sorted(graph):
        visit(unit)


def test_common_is_the_bottom_and_siblings_use_only_it():
    assert _graph()["converter.common"] == set()
    for sibling in SIBLINGS:
        for path in (ROOT / sibling).rglob("*.py"):
            used = {_unit(m) for m in _imports(path)} - {None}
            assert used <= {"converter.common"}, f"{path.relative_to(ROOT)} imports {sorted(used)}"


def test_stage_keys_cover_every_source_package():
    """A changed pass or exporter must invalidate the stages it made (the key hashes these files)."""
    from converter.pipeline.build_dir import sources

    found = {path.relative_to(ROOT).parts[0] for path in sources()}
    assert found == {"converter", "graph_passes", "calib_data", "targets"}
    assert ROOT / "graph_passes" / "framework.py" in sources()
    assert ROOT / "converter" / "pipeline" / "build_dir.py" in sources()


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


def test_the_board_libraries_import_nothing_of_converter():
    assert not _graph()[BOARD]
