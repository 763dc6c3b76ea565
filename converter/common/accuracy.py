"""Agreement metrics between a candidate (RKNN simulator) and a reference (ONNX Runtime)."""

from __future__ import annotations

import numpy as np


def compare(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """cosine; PSNR (20*log10(max|ref| / RMSE)) and SQNR (10*log10(sum ref^2 / sum err^2)) in dB;
    max / mean absolute error; relative error ||err|| / ||ref||."""
    cand = candidate.astype(np.float64).ravel()
    ref = reference.astype(np.float64).ravel()
    if cand.size != ref.size:
        raise ValueError(f"{cand.size} values compared with {ref.size}")
    err = cand - ref
    err_energy, ref_energy = float(err @ err), float(ref @ ref)
    rmse = float(np.sqrt(err_energy / max(ref.size, 1)))
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    norms = float(np.linalg.norm(cand) * np.linalg.norm(ref))
    return {
        "cosine": float(cand @ ref / norms) if norms > 0 else float(err_energy == 0),
        "psnr_db": _db(peak**2, rmse**2),
        "sqnr_db": _db(ref_energy, err_energy),
        "max_abs": float(np.max(np.abs(err))) if err.size else 0.0,
        "mean_abs": float(np.mean(np.abs(err))) if err.size else 0.0,
        "rel_error": _relative(err_energy, ref_energy),
    }


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10 * np.log10(signal / noise))


def _relative(err_energy: float, ref_energy: float) -> float:
    if ref_energy > 0:
        return float(np.sqrt(err_energy / ref_energy))
    return 0.0 if err_energy == 0 else float("inf")
