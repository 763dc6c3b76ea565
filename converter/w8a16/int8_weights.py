"""W8A16 weight-only quantization: symmetric, per output channel, int8 weights in [-127, 127].

Each channel's range is the better (lower weight MSE) of its min-max range and the range a histogram
search picks: the |w| histogram (HIST_BINS bins up to the channel's max) estimates, for each candidate
clipping threshold, the rounding error of the values inside it plus the clipping error of those
beyond; the threshold with the least estimated error is then checked against min-max on the real
weights. Outliers that would waste most of the int8 grid get clipped; channels without them keep
min-max.
"""

from __future__ import annotations

import numpy as np

QMAX = 127
HIST_BINS = 2048
CANDIDATES = np.linspace(0.3, 1.0, 57)  # clipping thresholds, as fractions of the channel's max |w|


def _dequantized(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.clip(np.round(w / scale), -QMAX, QMAX) * scale


def _histogram_thresholds(flat: np.ndarray) -> np.ndarray:
    """Per channel (rows of `flat`), the clipping threshold with the least histogram-estimated MSE."""
    peak = np.abs(flat).max(axis=1)
    safe = np.where(peak > 0, peak, 1.0)
    bins = np.minimum((np.abs(flat) / safe[:, None] * HIST_BINS).astype(np.int64), HIST_BINS - 1)
    rows = np.arange(flat.shape[0])[:, None] * HIST_BINS
    counts = np.bincount((rows + bins).ravel(), minlength=flat.shape[0] * HIST_BINS)
    counts = counts.reshape(flat.shape[0], HIST_BINS).astype(np.float64)
    centers = (np.arange(HIST_BINS) + 0.5) / HIST_BINS  # as fractions of the peak
    errors = np.empty((flat.shape[0], len(CANDIDATES)))
    for j, ratio in enumerate(CANDIDATES):
        step = ratio / QMAX
        inside = centers - np.round(centers / step) * step
        err = np.where(centers <= ratio, inside, centers - ratio)
        errors[:, j] = counts @ (err**2)
    return CANDIDATES[errors.argmin(axis=1)] * safe


def quantize(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """(int8 weight, float32 scale per output channel (axis 0), how the ranges were chosen)."""
    flat = weight.reshape(weight.shape[0], -1).astype(np.float64)
    peak = np.abs(flat).max(axis=1)
    thresholds = _histogram_thresholds(flat)
    shape = (-1,) + (1,) * (flat.ndim - 1)
    scale_minmax = np.where(peak > 0, peak, 1.0) / QMAX
    scale_hist = np.where(thresholds > 0, thresholds, 1.0) / QMAX
    mse_minmax = ((flat - _dequantized(flat, scale_minmax.reshape(shape))) ** 2).mean(axis=1)
    mse_hist = ((flat - _dequantized(flat, scale_hist.reshape(shape))) ** 2).mean(axis=1)
    use_hist = mse_hist < mse_minmax
    scale = np.where(use_hist, scale_hist, scale_minmax).astype(np.float32)
    q = np.clip(np.round(flat / scale.reshape(shape)), -QMAX, QMAX).astype(np.int8).reshape(weight.shape)
    err = np.where(use_hist, mse_hist, mse_minmax).sum()
    signal = float((flat**2).mean(axis=1).sum())
    return q, scale, {"histogram_channels": int(use_hist.sum()), "channels": int(flat.shape[0]),
                      "sqnr_db": float(10 * np.log10(signal / err)) if err > 0 else float("inf")}


def dequantize(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 weight = int8 x per-channel scale, exactly as DequantizeLinear computes it."""
    return q.astype(np.float32) * scale.reshape((-1,) + (1,) * (q.ndim - 1)).astype(np.float32)
