"""The toolkit's layer table, in the layouts 2.5.0 prints for rk3588 and for rk3576."""

from __future__ import annotations

from converter.toolkit.layer_table import cpu_ops, placement

RK3588 = """\
D RKNN: [01:39:33.334]                                                         Network Layer Information Table
D RKNN: [01:39:33.334] -----------------------------------------------------------------------------------------
D RKNN: [01:39:33.334] ID   OpType             DataType Target InputShape                               OutputShape            Cycles(DDR/NPU/Total)    RW(KB)       FullName
D RKNN: [01:39:33.334] -----------------------------------------------------------------------------------------
D RKNN: [01:39:33.334] 0    InputOperator      FLOAT16  CPU    \\                                        (1,4,16,16)            0/0/0                    0            InputOperator:sample
D RKNN: [01:39:33.334] 3    Conv               FLOAT16  NPU    (1,4,16,16),(40,4,3,3),(40)              (1,40,16,16)           396/1152/1152            5            Conv:/conv_in/Conv
D RKNN: [01:39:33.334] 7    Reshape            FLOAT16  CPU    (8,80,1,1),(4)                           (1,160,2,2)            0/0/0                    0            Reshape:/mid_block/resnets.0/norm1/Reshape_1
D RKNN: [01:39:33.334] 9    OutputOperator     FLOAT16  CPU    (1,4,16,16)                              \\                      0/0/0                    8            OutputOperator:out_sample
D RKNN: [01:39:33.334] -----------------------------------------------------------------------------------------
D RKNN: [01:39:33.335] something else 1 2 3
"""

RK3576 = """\
D RKNN: [03:03:14.646]                                                             Network Layer Information Table
D RKNN: [03:03:14.646] ID   OpType             DataType Target InputShape                               OutputShape            Cycles(DDR/NPU/Total)    SparseRatio  RW(KB)       FullName
D RKNN: [03:03:14.646] 0    InputOperator      INT8     CPU    \\                                        (1,4,8,8)              0/0/0                                 0            InputOperator:sample
D RKNN: [03:07:40.198] 3    Conv               FLOAT16  NPU    (1,4,8,8),(4,4,1,1)                      (1,4,8,8)              215/128/215              0%           0
D RKNN: [03:03:14.646] 4    Conv               INT8     NPU    (1,4,8,8),(32,4,3,3),(32)                (1,32,8,8)             498/576/576              0%           1            Conv:/conv_in/Conv
"""


def test_rk3588_rows_devices_and_cpu_fallbacks():
    rows = placement(RK3588)
    assert [(r["op"], r["device"], r["dtype"]) for r in rows] == [
        ("InputOperator", "CPU", "FLOAT16"), ("Conv", "NPU", "FLOAT16"), ("Reshape", "CPU", "FLOAT16"),
        ("OutputOperator", "CPU", "FLOAT16")]
    assert rows[1]["layer"] == "/conv_in/Conv" and rows[2]["output_shape"] == "(1,160,2,2)"
    assert [r["layer"] for r in cpu_ops(rows)] == ["/mid_block/resnets.0/norm1/Reshape_1"]


def test_rk3576_table_with_its_sparse_ratio_column():
    rows = placement(RK3576)
    assert [(r["layer"], r["dtype"], r["device"]) for r in rows] == [
        ("sample", "INT8", "CPU"), ("#3 (unnamed)", "FLOAT16", "NPU"), ("/conv_in/Conv", "INT8", "NPU")]
    assert placement("no table in this log\n") == []
