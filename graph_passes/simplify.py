"""Simplify the graph with onnxsim (constant folding, shape-op removal, onnxsim's own fusions).

RKNN behaviour: rknn-toolkit2's Python-level fusing (OpFusing) takes time by node count, not by
model size: 47 s of the SD 1.5-structured demo's 56 s build() for its ~1,700 exported nodes.
onnxsim about halves the nodes (the exported attention computes its scale through Shape / Slice /
Sqrt / Div chains that fold to constants).

Caveat, measured with onnxsim 0.8.1 + rknn-toolkit2 2.5.0: onnxsim merges each self-attention's
to_q / to_k / to_v MatMuls into one MatMul and a Split, which the toolkit converts wrongly (output
PSNR against ONNX Runtime 67.4 dB -> 21.4 dB on a tiny SD 1.5 UNet). `split_fused_qkv_projection`
must run after this pass; targets/ lists them in that order. onnxsim also renames the tensors it
creates (`_v_1046`), so some layer-report rows lose their diffusers module path.

Verified: ONNX Runtime outputs before/after agree to 1e-4 (tests/test_simplify.py); with
split_fused_qkv_projection after it, tiny builds of every preset reach >= 60 dB.
"""

from __future__ import annotations

from importlib.metadata import version

import onnx

from converter.common.external_weights import materialize
from .framework import GraphPass, HostProgram, PassReport


class Simplify(GraphPass):
    name = "simplify"

    def run(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport, list[HostProgram]]:
        import onnxsim

        report = PassReport(self.name)
        before = len(model.graph.node)
        whole = onnx.ModelProto()
        whole.CopyFrom(model)
        simplified, verified = onnxsim.simplify(materialize(whole), certify=False)  # it folds weights too
        if not verified:
            report.skipped.append("onnxsim could not verify its result; graph left as it was")
            return model, report, []
        report.rewrites.append(f"{before} -> {len(simplified.graph.node)} nodes (onnxsim {version('onnxsim')})")
        return simplified, report, []
