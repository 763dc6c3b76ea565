"""The stages of `rkconvert build`, in order: export, passes, reference, rknn, layers.

Each module's `run(..., tmp)` writes its files into `tmp` and returns the JSON-able meta that later
stages and the report read; converter/pipeline/build_dir.py commits `tmp` and reuses it on later runs.
"""
