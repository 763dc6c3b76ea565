"""Shared pieces every other part of rkconvert uses: errors, child processes, ONNX files and ONNX
Runtime, memory hand-back, progress, accuracy metrics. Imports nothing else from converter."""
