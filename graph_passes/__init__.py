"""The pass catalogue: every rewrite rkconvert knows, by name. Targets choose and order them."""

from .attention_key_as_gemm import AttentionKeyAsGemm
from .drop_unit_slice_steps import DropUnitSliceSteps
from .einsum_as_matmul import EinsumAsMatmul
from .framework import GraphPass, HostProgram, PassReport
from .group_norm_as_conv import GroupNormAsConv
from .host_time_projection import HostTimeProjection
from .pad_conv_channels import PadConvChannels
from .pad_matmul_inner_dim import PadMatmulInnerDim
from .simplify import Simplify
from .split_fused_qkv_projection import SplitFusedQkvProjection
from .tile_attention import TileAttention

# tile_attention's entry tiles nothing: a build configures it (converter/builds/pass_selection.py).
CATALOGUE: dict[str, GraphPass] = {p.name: p for p in (HostTimeProjection(), Simplify(), SplitFusedQkvProjection(),
                                                        GroupNormAsConv(), TileAttention(), PadConvChannels(),
                                                        PadMatmulInnerDim(), DropUnitSliceSteps(),
                                                        EinsumAsMatmul(), AttentionKeyAsGemm())}

__all__ = ["CATALOGUE", "GraphPass", "HostProgram", "PassReport"]
