"""The board runner, copied into every release bundle as `board/`: plain Python, numpy and onnxruntime
(rknn-toolkit-lite2 imported only when the NPU is used). Nothing here imports rkconvert."""
