"""W8A16 weights: the int8 math, the checkpoint format (folder and DequantizeLinear ONNX), and the
search for the fewest float16 layers (hybrid quantization)."""
