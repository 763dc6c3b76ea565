"""The stages of a build, in the order they run: export, passes, checkset (trajectory check inputs),
reference, calib (quantized builds), split and split-calib (--parts), rknn, layers (per-layer report),
hybrid-<k> (the hybrid search's trials: stage rknn's code), images (models that draw); diagnose adds
toolkit-probe, reduce and locate (converter/diagnose/diagnosis.py).

Each module's `run(..., tmp)` writes its files into `tmp` and returns the JSON-able meta its typed
result (a StageOutput, read back with `.read(record)`) is made from; converter/builds/build_dir.py
commits `tmp` and reuses it on later runs whose key matches.
"""
