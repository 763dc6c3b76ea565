"""W8A16 weights (weight-only int8, activations float16): the int8 math, the checkpoint as a diffusers
folder, and weight-only DequantizeLinear in ONNX, both ways."""
