"""`rkconvert quantize`: W8A16 weight-only quantization of a UNet (command.py)."""
