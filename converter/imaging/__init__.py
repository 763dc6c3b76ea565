"""Text to image on the host around a UNet that runs elsewhere (ONNX Runtime, the toolkit's
simulator), and how to judge the images: the evaluation set a model brings, image PSNR / SSIM,
prompt accuracy, grids."""
