"""The pass list a build runs: the target's order, the user's adjustments, clear refusals."""

from __future__ import annotations

import pytest

from converter.build.pass_selection import select
from converter.common.errors import UserError
from targets import get_chip

RK3588 = get_chip("rk3588")


def test_default_list_leaves_simplify_off_and_keeps_the_order():
    assert select(RK3588) == ["host_time_projection", "split_fused_qkv_projection", "group_norm_as_conv"]
    assert select(RK3588, enable=("simplify",)) == ["host_time_projection", "simplify", "split_fused_qkv_projection",
                                                    "group_norm_as_conv"]
    assert select(RK3588, skip=("host_time_projection",)) == ["split_fused_qkv_projection", "group_norm_as_conv"]
    assert select(RK3588, explicit="simplify, host_time_projection") == ["simplify", "host_time_projection"]


@pytest.mark.parametrize("kwargs, message", [
    ({"skip": ("nope",)}, "--skip-pass nope: no such pass"),
    ({"enable": ("nope",)}, "--enable-pass nope: no such pass"),
    ({"explicit": "simplify,nope"}, "--passes nope: no such pass"),
])
def test_unknown_passes_are_refused(kwargs, message):
    with pytest.raises(UserError, match=message):
        select(RK3588, **kwargs)
