"""Slice's optional `steps` input dropped where every step is 1, its default (torch.onnx writes it on every Slice).

RKNN limitation: rknn-toolkit2 2.5.0 reads a Slice with an explicit `steps` input otherwise than one without
it. Two Slices and a Concat that swap the halves of a rank-2 or rank-3 tensor (the timestep projection's
flip_sin_to_cos) kill build() with SIGSEGV after `fuse_slice_slice_concat_to_conv` (catalogue entry
flip-sin-cos-slice-concat); the same swap of a MatMul's output raises `KeyError: '<matmul>_tp'` after
`unsqueeze_to_4d_transpose` (entry slice-steps-swap-after-matmul, found by `rkconvert fuzz`). Without the
input, both build.

Rewrite (exact: 1 is what a missing step means): the input removed.

Verified: ONNX Runtime outputs before vs after are equal, and both repros (the flip crash reduced by
`rkconvert diagnose` from the tiny UNet, the fuzzer's MatMul swap) build and match ONNX Runtime
(tests/test_fuzz_found_passes.py).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .framework import GraphPass

STEPS = 4  # Slice(data, starts, ends, axes, steps)


class DropUnitSliceSteps(GraphPass):
    name = "drop_unit_slice_steps"
    problem_kind = "crash"
    problem = ("Slice with an explicit steps input of ones: rknn-toolkit2 2.5.0 dies (SIGSEGV) or raises on a "
               "Slice + Slice + Concat swap of a rank-2 or rank-3 tensor")

    def where(self, match):
        return match.name

    def find(self, graph):
        return [n for n in graph.nodes if n.op == "Slice" and len(n.inputs) > STEPS]

    def check(self, graph, match):
        steps = match.inputs[STEPS]
        if not isinstance(steps, gs.Constant) or not np.all(steps.values == 1):
            return f"{match.name}: steps other than 1 (or not constant)"
        return None

    def rewrite(self, graph, match, host):
        del match.inputs[STEPS]
        return f"{match.name}: steps of 1 left implicit"
