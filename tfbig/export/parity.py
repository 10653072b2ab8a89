"""Export-time parity: every artifact must reproduce the in-memory model.

Float artifacts must match within a max-abs-error bound relative to the
largest reference output (at least 1): float32 graphs differ from Keras only
by kernel rounding, float16 weights a little more. Quantized artifacts
(dynamic-range and int8 TFLite) lose precision by design, so for them the
bound is on what a caller sees: the share of outputs whose top-1 class
(or next token) agrees with the model. Both figures are recorded for every
float output, so the manifest shows what quantization cost.
"""

from __future__ import annotations

import numpy as np

from tfbig.export.errors import ParityError

MAX_RELATIVE_ERROR = {
    "saved_model": 1e-5,
    "onnx": 1e-4,
    "tflite_float32": 1e-4,
    "tflite_float16": 2e-2,
}
MIN_TOP1_AGREEMENT = {
    "tflite_dynamic_range": 0.95,
    "tflite_int8": 0.85,
}


def check_parity(artifact: str, actual, expected, *, kind: str) -> dict:
    """Compare `actual` with `expected`; raise ParityError when `kind`'s bound is broken.

    Returns {"max_abs_error": ..., "top1_agreement": ...} (the latter for
    outputs with a class axis); exact equality for strings and integers.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        raise ParityError(f"{artifact}: output shape {actual.shape} differs from the "
                          f"model's {expected.shape}")
    if expected.dtype.kind not in "f":
        if not np.array_equal(actual, expected):
            raise ParityError(f"{artifact}: outputs differ from the model's")
        return {"max_abs_error": 0.0}
    report = {"max_abs_error": float(np.max(np.abs(actual.astype(np.float64) - expected)))}
    if expected.ndim >= 2:
        report["top1_agreement"] = float(np.mean(actual.argmax(-1) == expected.argmax(-1)))
    if kind in MIN_TOP1_AGREEMENT:
        agreement = report.get("top1_agreement", 0.0)
        if not agreement >= MIN_TOP1_AGREEMENT[kind]:
            raise ParityError(f"{artifact}: top-1 agreement {agreement:.1%} with the in-memory "
                              f"model is below the {kind} bound "
                              f"{MIN_TOP1_AGREEMENT[kind]:.0%} (max abs error "
                              f"{report['max_abs_error']:.3g})")
        return report
    bound = MAX_RELATIVE_ERROR[kind] * max(1.0, float(np.max(np.abs(expected))))
    if not report["max_abs_error"] <= bound:  # also catches NaN
        raise ParityError(f"{artifact}: max abs error {report['max_abs_error']:.3g} vs the "
                          f"in-memory model exceeds the {kind} tolerance {bound:.3g}")
    return report
