"""`rkconvert generate`: text to image through a finished build, with the reference UNet and with the
`.rknn` in the toolkit's simulator, side by side."""
