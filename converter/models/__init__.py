"""What `--model` names and how it becomes a static-shape ONNX: presets, diffusers folders, weights
files, pruned widths, W8A16 checkpoints, the trained demo, tracing."""
