"""Which layers of a w8a8 build stay float16: each quantized tensor's cost at the output (emulated in ONNX
Runtime, from gradients, carried from a smaller proxy) and the search for the fewest float16 layers that
pass the gate."""
