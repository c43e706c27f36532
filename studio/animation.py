"""Keyframe animation: a path through the latents of 2 to 16 recipes, rendered and exported.

Each keyframe is a recipe (the full state of one image). A path runs from keyframe to keyframe in z
(lerp or slerp) while the class vectors are lerped; for a style family (StyleGAN2) it walks W instead,
linearly between the keyframes' styles (mixing and edits included), with the first keyframe's noise. Frames are drawn through the engine a few at a
time (so other visitors' requests get their turn in between) and streamed into an animated GIF or
an H.264 MP4 (so a long animation is never all in memory).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from studio import latent, media
from studio.bending import Bend
from studio.engine import Engine
from studio.recipe import Recipe, check_weights, request_for
from studio.sampling import Request, request_inputs

MODES = ("lerp", "slerp")
MIN_KEYFRAMES = 2
MAX_KEYFRAMES = 16
MAX_FRAMES_PER_SEGMENT = 120
MAX_FPS = 60
# One engine request draws this many frames at most, and only FRAMES_WHILE_DRAWING while someone drew
# in the last DRAWING_QUIET_S: an interactive request that arrives during an export then waits for one
# frame's pass, not for the whole animation (on a 2-core CPU a 4-frame pass took 3x one image's time).
FRAMES_PER_REQUEST = 16
FRAMES_WHILE_DRAWING = 1
DRAWING_QUIET_S = 2.0
# Exports encode at this much lower CPU priority, so interactive drawing on the same cores goes first.
EXPORT_NICENESS = 10
# Frames x output pixels of one animation: the time and disk it costs. The longest path (16 looping
# keyframes x 120 frames) fits at 512x512.
MAX_ANIMATION_PIXELS = 2**29
WRITERS = {".gif": media.write_gif, ".mp4": media.write_mp4}


@dataclass(frozen=True)
class PathOptions:
    """How a path travels through its keyframes.

    Attributes:
        frames_per_segment: Frames from one keyframe up to (not including) the next, 1 to 120.
        mode: "slerp" (keeps a Gaussian latent's norm typical mid-way) or "lerp" in z.
        easing: A name in ``latent.EASINGS``: "linear" or "ease-in-out" (slow at each keyframe).
        loop: Add the segment from the last keyframe back to the first.
    """

    frames_per_segment: int = 12
    mode: str = "slerp"
    easing: str = "linear"
    loop: bool = False

    def __post_init__(self) -> None:
        n = self.frames_per_segment
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_FRAMES_PER_SEGMENT:
            raise ValueError(f"frames per segment must be a whole number from 1 to {MAX_FRAMES_PER_SEGMENT}, not {n!r}")
        if self.mode not in MODES:
            raise ValueError(f"unknown interpolation {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.easing not in latent.EASINGS:
            raise ValueError(f"unknown easing {self.easing!r}; choose one of {', '.join(latent.EASINGS)}")

    def times(self, keyframes: int) -> list[tuple[int, float]]:
        """The (segment start keyframe, eased t) of every frame of a path through ``keyframes``.

        Raises:
            ValueError: Fewer than 2 or more than 16 keyframes.
        """
        check_keyframe_count(keyframes)
        return latent.path_times(keyframes, self.frames_per_segment, self.loop, self.easing)


def check_keyframe_count(count: int) -> None:
    """Raise ValueError unless ``count`` is 2 to 16."""
    if not MIN_KEYFRAMES <= count <= MAX_KEYFRAMES:
        raise ValueError(f"an animation needs {MIN_KEYFRAMES} to {MAX_KEYFRAMES} keyframes, not {count}")


def keyframe_model(recipes: Sequence[Recipe]) -> str:
    """The one model all keyframes use.

    Raises:
        ValueError: Fewer than 2 or more than 16 keyframes, or keyframes from different models.
    """
    check_keyframe_count(len(recipes))
    name = recipes[0].model
    for i, r in enumerate(recipes[1:], start=2):
        if r.model != name:
            raise ValueError(f"all keyframes must use the same model: keyframe 1 uses {name!r}, "
                             f"keyframe {i} uses {r.model!r}")
    return name


def keyframe_inputs(engine: Engine, recipes: Sequence[Recipe]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The keyframes' drawing latents (z ``[K, z_dim]``, or styles ``[K, L, w_dim]``) and class vectors
    ``[K, C]`` (None if unconditional or styled).

    Raises:
        ValueError: See ``keyframe_model``; recipe.RecipeError when a recipe was made with other
            weights of its model; zoo.ModelUnavailable.
    """
    # A style family maps each keyframe with the weights its frames are drawn with: the first keyframe's blend.
    model = engine.model(keyframe_model(recipes), recipes[0].tuned)
    zs, cs = [], []
    for r in recipes:
        check_weights(r, model)  # other weights would not give the keyframe's image back
        inputs = request_inputs(model, request_for(r))
        zs.append(inputs.latents)
        cs.append(inputs.c)
    return torch.cat(zs), None if cs[0] is None else torch.cat(cs)


def frame_inputs(z: torch.Tensor, c: torch.Tensor | None,
                 options: PathOptions) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The latents of every frame of a path through keyframe latents ``z`` ``[K, z_dim]`` (and classes ``c``).

    Styles ``[K, L, w_dim]`` are always interpolated linearly: W is where StyleGAN's paths are straight,
    and slerp's norm argument holds for a Gaussian z only.

    Returns:
        z ``[T, z_dim]`` and class vectors ``[T, C]`` (or None), ``T = frames_per_segment x segments``.
        A frame at t = 0 is its keyframe's latent to the bit, so it draws the keyframe's image.
    """
    k = len(z)
    interpolate = latent.slerp if options.mode == "slerp" and z.dim() == 2 else latent.lerp
    frames_z, frames_c = [], []
    for start, t in options.times(k):
        end = (start + 1) % k  # the loop's last segment returns to keyframe 0
        # At t = 0 slerp's sines need not cancel exactly; the keyframe itself is the frame.
        frames_z.append(z[start] if t == 0 else interpolate(z[start], z[end], t))
        if c is not None:
            frames_c.append(c[start] if t == 0 else latent.lerp(c[start], c[end], t))
    return torch.stack(frames_z), torch.stack(frames_c) if c is not None else None


# Bend values that pass smoothly from one keyframe's to the next; the others switch half-way.
GRADUAL_BENDS = ("translate", "rotate", "scale", "threshold", "multiply")


def frame_bends(recipes: Sequence[Recipe], options: PathOptions) -> tuple[tuple[Bend, ...], ...]:
    """Every frame's network bends: a keyframe's own at t = 0; between two keyframes whose bends are the
    same operations on the same layers and channels, their values interpolated (so a bend unfolds, from
    rotate=0 to rotate=90 say); otherwise the nearer keyframe's."""
    frames = []
    for start, t in options.times(len(recipes)):
        a, b = recipes[start].bends, recipes[(start + 1) % len(recipes)].bends
        frames.append(a if t == 0 else _bends_between(a, b, t))
    return tuple(frames)


def _bends_between(a: tuple[Bend, ...], b: tuple[Bend, ...], t: float) -> tuple[Bend, ...]:
    def where(bend: Bend) -> tuple:
        return bend.layer, bend.op, bend.channels, bend.share, bend.seed

    if [where(x) for x in a] != [where(y) for y in b]:
        return a if t < 0.5 else b
    return tuple(replace(x, value=x.value + (y.value - x.value) * t) if x.op in GRADUAL_BENDS
                 else (x if t < 0.5 else y) for x, y in zip(a, b))


def draw_frames(engine: Engine, recipes: Sequence[Recipe], options: PathOptions, step: int = 1,
                precision: str = "exact") -> Iterator[np.ndarray]:
    """Every ``step``-th ``[H, W, 3]`` uint8 frame of the path through ``recipes`` (from the first), in order.

    ``precision``: "exact" (fp32: exports) or "fast" (the engine's chosen precision: previews).

    Frames are drawn in background engine requests of at most ``FRAMES_PER_REQUEST`` (or
    ``FRAMES_WHILE_DRAWING`` while someone draws), each only when the previous ones have been used:
    memory holds one request's frames, and interactive requests go first.

    Raises:
        ValueError: Bad keyframes (see ``keyframe_inputs``), before any frame is drawn; the
            engine's errors otherwise.
    """
    z, c = frame_inputs(*keyframe_inputs(engine, recipes), options)
    noise = recipes[0].noise_seed  # fine detail that changed from frame to frame would flicker
    bends = frame_bends(recipes, options)[::step] if any(r.bends for r in recipes) else None
    # One blend of the weights for the whole path (the first keyframe's): each blend is a pass of its own.
    return drawn_frames(engine, Request(recipes[0].model, z=z[::step], c=None if c is None else c[::step],
                                  noise_seed=noise, frame_bends=bends, tuned=recipes[0].tuned, precision=precision,
                                  background=True))


def drawn_frames(engine: Engine, frames: Request) -> Iterator[np.ndarray]:
    """``frames``' images, a few engine requests at a time."""
    start, z, c, bends = 0, frames.z, frames.c, frames.frame_bends
    while start < len(z):
        drawing = engine.quiet_for() < DRAWING_QUIET_S
        part = slice(start, start + (FRAMES_WHILE_DRAWING if drawing else FRAMES_PER_REQUEST))
        yield from engine.generate(replace(frames, z=z[part], c=None if c is None else c[part],
                                           frame_bends=None if bends is None else bends[part]))
        start = part.stop


def pixel_limit_text() -> str:
    """The frames x pixels limit in words, as the UI and the errors state it."""
    return (f"{MAX_ANIMATION_PIXELS // 2**20:,} megapixels of frames "
            f"({MAX_ANIMATION_PIXELS // 512**2:,} frames at 512×512)")


def check_pixels(frame_count: int, side: int) -> None:
    """Raise ValueError when ``frame_count`` frames of ``side`` x ``side`` pass ``MAX_ANIMATION_PIXELS``."""
    if frame_count * side**2 > MAX_ANIMATION_PIXELS:
        raise ValueError(f"{frame_count} frames at {side}x{side} are too many pixels for one animation "
                         f"(at most {pixel_limit_text()}): use fewer frames or a smaller size")


def check_export(path: Path, frame_count: int, side: int, fps: float, size: int | None = None) -> None:
    """Check an export's settings before any frame is drawn; ``export`` takes the same.

    Args:
        path: Must end in ``.gif`` or ``.mp4``.
        frame_count: How many frames the animation has.
        side: The frames' side in pixels (the model's resolution).
        fps: Frames per second, 1 to 60.
        size: Output side in pixels, a multiple of ``side``; None keeps ``side``.

    Raises:
        ValueError: Another extension, an fps or size out of range, or more frames x pixels than
            ``MAX_ANIMATION_PIXELS``.
    """
    path = Path(path)
    if path.suffix.lower() not in WRITERS:
        raise ValueError(f"cannot write {path.name!r}: the file name must end in {' or '.join(WRITERS)}")
    if not 1 <= fps <= MAX_FPS:
        raise ValueError(f"fps must be from 1 to {MAX_FPS}, not {fps:g}")
    if size is not None and (size < side or size % side):
        raise ValueError(f"size must be a multiple of the frames' side ({side} px), such as {side} or "
                         f"{2 * side}, not {size}")
    check_pixels(frame_count, size or side)


def export(path: Path, frames: Iterable[np.ndarray], fps: float, size: int | None = None) -> None:
    """Write uint8 frames as a looping GIF or an H.264 MP4, by ``path``'s extension, atomically.

    The frames are taken and encoded on a thread of their own at a lower CPU priority (see
    ``EXPORT_NICENESS``), which this call waits for.

    Args:
        path: Ends in ``.gif`` or ``.mp4``.
        frames: ``[T, H, W, 3]``, or any iterable of ``[H, W, 3]`` (such as ``draw_frames(...)``): written as
            they come, and the writing stops with ValueError once they pass ``MAX_ANIMATION_PIXELS``.
        fps: Frames per second.
        size: Enlarges with nearest-neighbour, so pixels stay crisp; see ``check_export``.

    Raises:
        ValueError: From ``check_export`` (before anything is written), or no frames.
    """
    _in_background(lambda: _write(Path(path), frames, fps, size))


def _write(path: Path, frames: Iterable[np.ndarray], fps: float, size: int | None) -> None:
    first, frames = media.peek_frames(frames)
    side = first.shape[0]
    check_export(path, 1, side, fps, size)
    WRITERS[path.suffix.lower()](path, _within_limit(frames, size or side), fps, size)


def _within_limit(frames: Iterator[np.ndarray], out_side: int) -> Iterator[np.ndarray]:
    # A stream's length is known only at its end: check the limit as the frames come.
    for count, frame in enumerate(frames, start=1):
        check_pixels(count, out_side)
        yield frame


def _in_background(work: Callable[[], None]) -> None:
    """Run ``work`` on a thread of its own at a lower CPU priority, wait for it and raise what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        _lower_priority()
        try:
            work()
        except BaseException as e:  # handed to the waiting caller
            errors.append(e)

    thread = threading.Thread(target=run, name="studio-export")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _lower_priority() -> None:
    # Linux gives each thread its own nice value, and the encoder process started from the thread
    # inherits it; elsewhere setpriority would slow the whole studio down, so exports run as they are.
    if sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + EXPORT_NICENESS))
