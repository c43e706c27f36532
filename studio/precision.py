"""The precision policy: which floating-point format a device draws fastest in, and why.

A reduced precision (bf16 or fp16 autocast) is a candidate only where the hardware runs it natively:
CUDA GPUs, and CPUs with AMX or AVX512-BF16. Elsewhere bf16 is emulated (on an AVX2 CPU about 70x
slower than fp32), so fp32 is chosen without measuring. Where there are candidates, a one-off
calibration times one small batch in each and keeps the fastest that is both clearly faster than
fp32 and close to its pixels. The decision is made from the device's capability and the measurement,
never from a list of processor names.

``$STUDIO_PRECISION`` overrides the policy: ``exact`` always chooses fp32, ``fast`` always chooses the
device's reduced precision (bf16 on any CPU, even where emulated: slow, but it lets tests exercise that
path on any machine), ``auto`` (the default) decides as above.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

ENV = "STUDIO_PRECISION"
MODES = ("auto", "exact", "fast")
REQUESTS = ("fast", "exact")  # what a caller asks for: the device's chosen precision, or fp32
# A reduced precision must beat fp32 by this much in calibration: timing noise must not pick it.
MIN_SPEEDUP = 1.15
# Beyond this many uint8 levels from fp32 a reduced precision is broken for that model (fp16 overflow,
# say), not merely rounded: bf16 stays within about 2.5 levels on the default model.
MAX_LEVELS = 16
CALIBRATION_S = 0.15  # the time one calibration batch aims at; a handful of batches in all
CALIBRATION_MAX_BATCH = 16

Draw = Callable[[torch.dtype | None, int], np.ndarray]  # (autocast dtype or None for fp32, images) -> uint8
NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Choice:
    """The precision a device draws a model in, and why.

    Attributes:
        dtype: The autocast dtype, or None for plain fp32.
        reason: One sentence, such as "fp32: this CPU has no native bf16 (AVX2)".
    """

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        """"fp32", "bf16" or "fp16"."""
        return NAMES[self.dtype]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``'s type, or nothing for fp32 (None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def mode() -> str:
    """``$STUDIO_PRECISION`` (default "auto").

    Raises:
        ValueError: Another value.
    """
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV} must be one of {', '.join(MODES)}, not {value!r}")
    return value


def cpu_bf16_support() -> str | None:
    """The CPU's native bf16 instructions ("AMX" or "AVX512-BF16"), or None where bf16 is emulated."""
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX512-BF16"
    return None


def candidates(device: torch.device) -> list[torch.dtype]:
    """The reduced precisions ``device`` runs natively, in the order they are preferred."""
    if device.type == "cuda":
        return [torch.float16, *([torch.bfloat16] if torch.cuda.is_bf16_supported() else [])]
    return [torch.bfloat16] if device.type == "cpu" and cpu_bf16_support() else []


def forced_fast(device: torch.device) -> torch.dtype:
    """The reduced precision ``STUDIO_PRECISION=fast`` draws in: fp16 on CUDA, bf16 elsewhere (even emulated)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _without_native(device: torch.device) -> str:
    if device.type == "cpu":
        return f"fp32: this CPU has no native bf16 ({torch.backends.cpu.get_cpu_capability()})"
    return f"fp32: {device.type} has no reduced precision the studio uses"


def choose(device: torch.device, draw: Draw, override: str | None = None) -> Choice:
    """The precision to draw in on ``device``: by ``override`` or ``$STUDIO_PRECISION``, else capability and calibration.

    Args:
        device: Where the model runs.
        draw: Draws n images in a precision (see ``Draw``); called only when there are candidates.
        override: "auto", "exact" or "fast"; None reads ``$STUDIO_PRECISION``.
    """
    chosen = override or mode()
    if chosen == "exact":
        return Choice(None, f"fp32: {ENV}=exact")
    if chosen == "fast":
        dtype = forced_fast(device)
        native = "native" if dtype in candidates(device) else "emulated, slow"
        return Choice(dtype, f"{NAMES[dtype]}: {ENV}=fast ({native} on this device)")
    options = candidates(device)
    if not options:
        return Choice(None, _without_native(device))
    return calibrate(device, draw, options)


def calibrate(device: torch.device, draw: Draw, options: list[torch.dtype]) -> Choice:
    """Time one batch in fp32 and in each of ``options``; the fastest that is close to fp32's pixels wins."""
    start = time.perf_counter()
    draw(None, 1)  # warm-up, and the size of a batch that takes about CALIBRATION_S
    n = max(1, min(CALIBRATION_MAX_BATCH, int(CALIBRATION_S / max(time.perf_counter() - start, 1e-6))))
    exact, fp32_s = _timed(draw, None, n)
    where = "in calibration" if device.type == "cuda" else f"({cpu_bf16_support()}) in calibration"
    best, best_s, notes = None, fp32_s, []
    for dtype in options:
        images, seconds = _timed(draw, dtype, n)
        levels = int(np.abs(images.astype(np.int16) - exact.astype(np.int16)).max())
        if levels > MAX_LEVELS:
            notes.append(f"{NAMES[dtype]} moved pixels by {levels} levels")
        elif seconds * MIN_SPEEDUP < best_s:
            best, best_s = dtype, seconds
        else:
            notes.append(f"{NAMES[dtype]} was {fp32_s / seconds:.2f}x fp32's speed")
    if best is None:
        return Choice(None, f"fp32: {'; '.join(notes)} {where}")
    return Choice(best, f"{NAMES[best]}: {fp32_s / best_s:.1f}x faster than fp32 {where}")


def _timed(draw: Draw, dtype: torch.dtype | None, n: int) -> tuple[np.ndarray, float]:
    """``draw``'s images after a warm-up pass, and the seconds of the timed pass."""
    draw(dtype, n)  # kernels, caches and layouts are built on the first pass in a precision
    start = time.perf_counter()
    images = draw(dtype, n)
    return images, time.perf_counter() - start


def for_training(device: torch.device, override: str | None = None) -> Choice:
    """The autocast precision of fine-tuning: bf16 where native (fp32 master weights and losses), else fp32.

    No fp16 and no calibration: fp16 would need loss scaling, and a training step's speed-up shows
    in the step times the run reports.

    Args:
        device: Where the run trains.
        override: "auto", "exact" or "fast" (bf16 even where emulated); None reads ``$STUDIO_PRECISION``.
    """
    chosen = override or mode()
    if chosen == "exact":
        return Choice(None, f"fp32: {ENV}=exact")
    native = torch.bfloat16 in candidates(device)
    if chosen == "fast":
        return Choice(torch.bfloat16, f"bf16: {ENV}=fast ({'native' if native else 'emulated, slow'} on this device)")
    if native:
        where = cpu_bf16_support() if device.type == "cpu" else device.type
        return Choice(torch.bfloat16, f"bf16: native on this device ({where})")
    return Choice(None, _without_native(device))
