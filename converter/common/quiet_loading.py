"""diffusers' and transformers' notes and progress bars while rkconvert loads or saves their models (no text-encoder
keys in a LoRA, a missing torchvision, weights loading): what matters is checked by rkconvert and said in one line."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def quiet():
    """Both libraries at error level without progress bars for the block, as they were after it."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    before = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled())
              for lib in (diffusers_logging, transformers_logging)]
    for lib, _, _ in before:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, level, bars in before:
            lib.set_verbosity(level)
            if bars:
                lib.enable_progress_bar()
