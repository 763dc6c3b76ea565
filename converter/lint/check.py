"""`rkconvert lint`: what the target would refuse, run on the CPU, crash on or convert wrongly, and which
pass fixes it, found without building.

Findings come from two kinds of facts: the target's operator facts (targets/<chip>.py) applied to every
node that computes at run time (shape arithmetic on static shapes is folded by the toolkit and skipped),
and the patterns of the target's passes that fix a toolkit problem (each pass's own `find`/`check`). The
selected passes are then run and the graph checked again: what is left has no fix in this pass list.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from graph_passes import CATALOGUE
from graph_passes.framework import import_graph
from targets.chip import Chip


@dataclass(frozen=True)
class Finding:
    node: str
    op: str
    kind: str  # "rejected" | "cpu" | "crash" | "unfaithful"
    problem: str
    fix: str | None  # the pass written for this pattern, if any

    def key(self) -> tuple[str, str]:
        return self.kind, self.node


def _runtime_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes computing on run-time values: not Constant / Shape, not fed by constants only."""
    constant = {t.name for t in model.graph.initializer}
    runtime = []
    for node in model.graph.node:
        if node.op_type in ("Constant", "Shape") or all(i in constant for i in node.input if i):
            constant.update(node.output)
        else:
            runtime.append(node)
    return runtime


def findings(model: onnx.ModelProto, chip: Chip) -> list[Finding]:
    found = []
    for node in _runtime_nodes(model):
        if node.op_type in chip.rejected_ops:
            found.append(Finding(node.name, node.op_type, "rejected", chip.rejected_ops[node.op_type], None))
        elif node.op_type in chip.cpu_only_ops and not chip.cpu_only_ops[node.op_type]:
            found.append(Finding(node.name, node.op_type, "cpu", f"{node.op_type} runs on the CPU on {chip.name}", None))
    for graph_pass in (CATALOGUE[name] for name in chip.passes):
        if not graph_pass.problem_kind:
            continue
        graph = import_graph(graph_pass.prepare(model))
        for match in graph_pass.find(graph):
            if graph_pass.check(graph, match) is None:
                node = graph_pass.where(match)
                op = next((n.op for n in graph.nodes if n.name == node), "")
                found.append(Finding(node, op, graph_pass.problem_kind, graph_pass.problem, graph_pass.name))
    return found


@dataclass
class LintResult:
    before: list[Finding]  # in the graph as exported
    fixed_by: dict[tuple[str, str], str]  # finding key -> the pass after which it was gone
    remaining: list[Finding]  # after every selected pass: no fix in this pass list


def lint(model: onnx.ModelProto, chip: Chip, passes: list[str]) -> LintResult:
    before = current = findings(model, chip)
    fixed_by = {}
    for name in passes:
        model, _, _ = CATALOGUE[name].run(model)
        now = findings(model, chip)
        still = {f.key() for f in now}
        fixed_by.update({f.key(): name for f in current if f.key() not in still})
        current = now
    return LintResult(before, fixed_by, current)
