"""Conversions between generator tensors, uint8 arrays and PIL images; grids and PNG files."""

from __future__ import annotations

import io
import itertools
import math
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import GifImagePlugin, Image

from studio.storage import atomic_write, atomic_write_bytes


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Generator output ``[N, C, H, W]`` in [-1, 1] -> ``[N, H, W, C]`` uint8.

    ``uint8 = clamp(round((x + 1) * 127.5), 0, 255)``, computed in float32 on whatever device holds
    ``x`` so only the small uint8 array crosses to the CPU.
    """
    x = ((x.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def to_pil(image: np.ndarray) -> Image.Image:
    """One ``[H, W, C]`` uint8 array as a PIL RGB image."""
    return Image.fromarray(np.ascontiguousarray(image), "RGB")


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``[N, H, W, C]`` images into one ``[rows*H, cols*W, C]`` array with ``pad`` white pixels between."""
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        out[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = img
    return out


# PNG options for images a generator drew. After PNG's per-row filters, zlib's run-length strategy
# packs them as small as Pillow's default deflate (1-3% smaller) in a fifth of the CPU time: the largest
# cost of the studio's own in serving an image. Flat pictures (gradients, line art) come out far larger
# with it, so artwork uploads keep the default. Both are lossless. Figures: python -m studio bench png
DRAWN_PNG = {"compress_type": zlib.Z_RLE}


def png_bytes(image: np.ndarray, **options: object) -> bytes:
    """Encode one ``[H, W, C]`` uint8 array as PNG; ``options`` go to Pillow's PNG writer (see ``DRAWN_PNG``)."""
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG", **options)
    return buf.getvalue()


def save_png(path: Path, image: np.ndarray) -> None:
    """Write one ``[H, W, C]`` uint8 array as a PNG file, atomically."""
    atomic_write_bytes(Path(path), png_bytes(image))


def peek_frames(frames: Iterable[np.ndarray]) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    """The first of ``frames`` and then all of them one at a time; raises ValueError when there are none."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("an animation needs at least one frame")
    return first, itertools.chain([first], frames)


def _factor(side: int, size: int | None) -> int:
    """The integer enlargement that takes ``side`` to ``size`` (1 when ``size`` is None)."""
    return max(1, (size or side) // side)


def write_gif(path: Path, frames: Iterable[np.ndarray], fps: float, size: int | None = None) -> None:
    """Write uint8 frames (``[T, H, W, 3]``, or any iterable of ``[H, W, 3]``) as a looping animated GIF, atomically.

    Frames are encoded as they come, so a long animation is never all in memory. Each frame gets its
    own adaptive 256-colour palette; ``size`` enlarges with nearest-neighbour, so pixels stay crisp.
    """
    duration_ms = round(1000 / fps)
    first, stream = peek_frames(frames)
    factor = _factor(first.shape[0], size)

    def write(tmp: Path) -> None:
        # PIL's save_all holds every frame until the end; its frame-level encoder writes each at once.
        with open(tmp, "wb") as f:
            for i, frame in enumerate(stream):
                # Quantising each frame with a fast octree is ~30x quicker than PIL's default palette
                # step, at a small cost in colour error (3.5 vs 2.7 levels on the default model). It
                # runs at the frame's own size; the palette image (a byte a pixel) is then enlarged.
                image = to_pil(frame).quantize(256, method=Image.Quantize.FASTOCTREE)
                if factor > 1:
                    image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
                if i == 0:  # the first frame's palette is the global one
                    header, _ = GifImagePlugin.getheader(image, info={"loop": 0, "duration": duration_ms})
                    f.writelines(header)
                f.writelines(GifImagePlugin.getdata(image, duration=duration_ms, disposal=1,
                                                    include_color_table=i > 0))
            f.write(b";")  # the GIF trailer

    atomic_write(Path(path), write)


def write_mp4(path: Path, frames: Iterable[np.ndarray], fps: float, size: int | None = None,
              quality: int = 20) -> None:
    """Write uint8 frames (``[T, H, W, 3]``, or any iterable of ``[H, W, 3]``) as an H.264 MP4, atomically.

    Frames are piped to the encoder as they come, so a long animation is never all in memory, and
    enlarged to ``size`` (nearest-neighbour) by the encoder itself. The video is yuv420p (plays
    everywhere), from the ffmpeg binary that the imageio-ffmpeg wheel ships, so no system ffmpeg is
    needed. ``quality`` is x264's CRF (lower is better; 18-23 is visually lossless to good).
    """
    import imageio_ffmpeg  # imported here: only exports need it

    first, stream = peek_frames(frames)
    h, w = first.shape[:2]
    factor = _factor(h, size)
    filters = [f"scale={w * factor}:{h * factor}:flags=neighbor"] if factor > 1 else []
    if (w * factor) % 2 or (h * factor) % 2:  # yuv420p needs even sides
        filters.append("pad=ceil(iw/2)*2:ceil(ih/2)*2")
    options = ["-vf", ",".join(filters)] if filters else []

    def write(tmp: Path) -> None:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
            output_params=[*options, "-crf", str(quality), "-movflags", "+faststart", "-f", "mp4"],
            ffmpeg_log_level="error",
        )
        writer.send(None)
        try:
            for frame in stream:
                writer.send(np.ascontiguousarray(frame))
        finally:
            writer.close()  # ends ffmpeg also when drawing a frame failed

    atomic_write(Path(path), write)
