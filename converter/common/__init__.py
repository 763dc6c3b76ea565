"""Shared pieces every other part of rkconvert uses: errors, ONNX files and ONNX Runtime, memory
hand-back, progress, accuracy metrics, joining a Ray cluster. Imports nothing else from converter."""
