"""The demo's world: drawn scenes of coloured shapes with captions (`scenes`), and a judge of whether an
image shows what its caption asked for (`judge`). tools/train_demo.py trains a text-to-image model on it."""
