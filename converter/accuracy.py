"""Output agreement metrics between a candidate (RKNN simulator) and a reference (ONNX Runtime)."""

from __future__ import annotations

import numpy as np


def compare(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """cosine, PSNR in dB (20*log10(max|ref| / RMSE)), max and mean absolute error."""
    if candidate.shape != reference.shape:
        candidate = candidate.reshape(reference.shape)
    cand = candidate.astype(np.float64).ravel()
    ref = reference.astype(np.float64).ravel()
    err = cand - ref
    rmse = float(np.sqrt(np.mean(err**2)))
    peak = float(np.max(np.abs(ref)))
    norms = float(np.linalg.norm(cand) * np.linalg.norm(ref))
    return {
        "psnr_db": float("inf") if rmse == 0 else 20 * np.log10(peak / rmse) if peak > 0 else float("-inf"),
        "cosine": float(cand @ ref / norms) if norms > 0 else float(rmse == 0),
        "max_abs": float(np.max(np.abs(err))),
        "mean_abs": float(np.mean(np.abs(err))),
    }
