"""rkconvert: diffusion UNets to .rknn for Rockchip NPUs, checked against ONNX Runtime."""

__version__ = "0.1.0"
