"""The live status of a stage whose child process (the toolkit) reports its steps."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from converter.common.progress import child_status

TITLE = ("rknn", "rknn-toolkit2 float16 build for rk3588 + simulator, 2 parts")
NODE_LIST = "D remove node = " + "['/up_blocks.1/attentions.1/transformer_blocks.0/attn2/Reshape_2', " * 6 + "]"


def _lines(markup: str, width: int) -> list[str]:
    console = Console(width=width, color_system=None)
    rendered = console.render_lines(Text.from_markup(markup), console.options.update(width=width))
    return ["".join(segment.text for segment in line).rstrip() for line in rendered]


def test_a_long_log_line_keeps_the_status_at_two_lines_at_80_columns():
    phase = "part 1 export_rknn() · part 2 build()"
    lines = _lines(child_status(*TITLE, phase, NODE_LIST, 38.0, 80), 78)  # the spinner takes 2 of the 80
    assert lines == [f"rknn: {TITLE[1]} [38 s]", f"  {phase}  {NODE_LIST[-(80 - 4 - len(phase) - 2):]}"]
    assert lines[1].endswith("Reshape_2', ]")  # the newest end of the line is what is kept


def test_a_terminal_too_narrow_for_the_step_shows_no_log_tail():
    lines = _lines(child_status("rknn", "build", "part 1 build()", NODE_LIST, 3.0, 16), 200)
    assert lines == ["rknn: build [3 s]", "  part 1 build()"]
