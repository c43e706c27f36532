"""Artwork ingestion: uploaded files and zip archives -> a validated, de-duplicated, square image set.

``ingest`` reads every source into memory (zip members included: nothing from an upload is ever
extracted to disk, unpickled or handed to a decoder outside the six accepted formats), turns each
image into a ``resolution`` x ``resolution`` RGB square, drops exact and near duplicates, and writes
the set under ``STUDIO_HOME/datasets/<name>/`` in one atomic step:

- ``00000.png`` ...: the images, in input order;
- ``manifest.json``: per image its source name, the sha256 of the original bytes, the original size
  ``[w, h]`` (as displayed, EXIF rotation applied) and the output file;
- ``report.json``: every rejected input and why;
- ``contact.png``: a contact sheet of the kept images.

``load_dataset`` gives the training loop the set as one ``[N, 3, R, R]`` tensor in [-1, 1].
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import stat
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from studio.media import grid, png_bytes
from studio.storage import atomic_dir, studio_home

Source = Path | str | tuple[str, bytes]
Background = Literal["white", "black"]
Fit = Literal["crop", "pad"]

# The only Pillow decoders ever run on an upload (other formats are only named, from their header).
# Pillow's JPEG decoder reports a JPEG with a multi-picture (camera) extension as MPO.
DECODERS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
ACCEPTED = "PNG, JPEG, WebP, BMP, TIFF or GIF"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive's end record
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
# Files that operating systems add to folders and zips (macOS resource forks, Finder and Explorer
# caches): skipped silently, because listing hundreds of them as "not an image" would bury the report.
OS_JUNK = re.compile(r"(^|/)(__MACOSX/|\._[^/]*$|\.DS_Store$|Thumbs\.db$|desktop\.ini$)", re.IGNORECASE)
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Pillow's reduce-then-resample shortcut: with a gap of 3 the result is indistinguishable from a full
# Lanczos pass (Pillow's documentation) at a fraction of the cost on large photos.
REDUCING_GAP = 3.0
# Two images are near duplicates when their 64-bit perceptual hashes differ in at most this many bits.
# Measured on 320 default-model eyes at 128 px: re-encoding as JPEG (quality 30-95), brightness +-20%
# (scaled or shifted), a 1-pixel shift flip at most 6 bits, a 2% crop at most 10 (mean 4); distinct
# drawings differ by 12 or more (mean 30). The hash sees luminance only, so one drawing in other
# colours (the same seed under another eye colour) often falls within 8 too, and counts as a duplicate.
NEAR_DUPLICATE_BITS = 8


class Reason(StrEnum):
    """Why an input was rejected: the first words of every rejection's reason."""

    EMPTY = "empty"
    NOT_AN_IMAGE = "not an image"
    UNSUPPORTED = "unsupported format"
    TRUNCATED = "truncated"
    TOO_SMALL = "too small"
    PIXEL_LIMIT = "over the pixel limit"
    DUPLICATE = "duplicate"
    TOO_LARGE = "too large"
    CORRUPT_ARCHIVE = "corrupt archive"
    UNSAFE_PATH = "unsafe path"
    SYMLINK = "symlink entry"
    NESTED_ARCHIVE = "nested archive"
    TOO_MANY_ENTRIES = "too many entries"


@dataclass(frozen=True)
class Kept:
    """One image of the data set.

    Attributes:
        source: The input's name (``archive.zip/path/in/archive`` for an archive's entry).
        sha256: Hex sha256 of the original bytes.
        size: Original ``(width, height)`` as displayed (EXIF rotation applied).
        file: The PNG's name inside the data set folder.
    """

    source: str
    sha256: str
    size: tuple[int, int]
    file: str

    def to_json(self) -> dict:
        """The manifest's entry for this image."""
        return {"source": self.source, "sha256": self.sha256, "size": list(self.size), "file": self.file}


@dataclass(frozen=True)
class Rejection:
    """One input left out, and why (a refused archive is a single rejection)."""

    source: str
    category: Reason
    detail: str

    @property
    def reason(self) -> str:
        """``"<category>: <detail>"``, for people."""
        return f"{self.category}: {self.detail}"

    def to_json(self) -> dict:
        """``{"source": ..., "reason": ...}``."""
        return {"source": self.source, "reason": self.reason}


@dataclass
class IngestReport:
    """What ``ingest`` wrote: the data set folder, the kept images in order, the rejected inputs."""

    dataset: Path
    kept: list[Kept]
    rejected: list[Rejection]

    def to_json(self) -> dict:
        """``{"dataset": str, "kept": [{"source": ...}, ...], "rejected": [{"source", "reason"}, ...]}``."""
        return {"dataset": str(self.dataset), "kept": [k.to_json() for k in self.kept],
                "rejected": [r.to_json() for r in self.rejected]}


class NoUsableImages(ValueError):
    """Not one input gave a usable image; nothing was written. ``rejected`` says why for each."""

    def __init__(self, rejected: list[Rejection]) -> None:
        n = len(rejected)
        super().__init__(f"no usable image: {n} input{'s' if n != 1 else ''} rejected; nothing was written")
        self.rejected = rejected


class _Rejected(Exception):
    """Raised inside ingestion to reject the input (or the whole archive) at hand."""

    def __init__(self, category: Reason, detail: str) -> None:
        super().__init__(detail)
        self.category = category
        self.detail = detail


@dataclass(frozen=True)
class _Options:
    resolution: int
    background: Background
    fit: Fit
    max_pixels: int
    max_entries: int
    max_archive_bytes: int

    def __post_init__(self) -> None:
        if not 8 <= self.resolution <= 2048:
            raise ValueError(f"resolution must be 8 to 2048 pixels, not {self.resolution}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be white or black, not {self.background!r}")
        if self.fit not in ("crop", "pad"):
            raise ValueError(f"fit must be crop or pad, not {self.fit!r}")


# -- names and folders ----------------------------------------------------------------------------------


def datasets_root() -> Path:
    """The folder that holds one sub-folder per data set."""
    return studio_home() / "datasets"


def dataset_dir(name: str) -> Path:
    """The folder of data set ``name``; the name must be 1-64 letters, digits, ``-`` or ``_``."""
    if not NAME.fullmatch(name):
        raise ValueError(f"bad data set name {name!r}: use 1 to 64 letters, digits, - or _")
    return datasets_root() / name


def list_datasets() -> list[str]:
    """Names of the complete data sets, sorted."""
    root = datasets_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if NAME.fullmatch(p.name) and (p / "manifest.json").is_file())


def load_dataset(name: str) -> torch.Tensor:
    """Data set ``name`` as ``[N, 3, R, R]`` float32 in [-1, 1], in manifest order.

    Raises:
        FileNotFoundError: There is no such data set.
    """
    folder = dataset_dir(name)
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"no data set named {name!r} in {datasets_root()}; make one with: "
                                f"python -m studio ingest FILES... --name {name}")
    manifest = json.loads((folder / "manifest.json").read_text())
    images = []
    for entry in manifest["images"]:
        with Image.open(folder / entry["file"], formats=["PNG"]) as im:
            images.append(np.asarray(im.convert("RGB")))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)  # [N, 3, R, R] uint8
    return x.float().div_(127.5).sub_(1)


# -- ingestion ------------------------------------------------------------------------------------------


def ingest(sources: Iterable[Source], name: str, resolution: int, *, background: Background = "white",
           fit: Fit = "crop", max_pixels: int = 40_000_000, max_entries: int = 10_000,
           max_archive_bytes: int = 2**30) -> IngestReport:
    """Turn image files and zip archives into data set ``name``, replacing any older set of that name.

    Args:
        sources: File paths (a folder stands for every file under it) or ``(name, bytes)`` pairs; each
            is an image or a zip archive, told apart by content.
        name: The data set's name (letters, digits, ``-``, ``_``).
        resolution: Side of the square output images, in pixels.
        background: Colour that transparency is composited on, and that ``pad`` fills with.
        fit: ``crop`` the centre square, or ``pad`` the whole image out to a square.
        max_pixels: Images whose header declares more pixels are rejected before decoding (Pillow's
            own decompression-bomb limit, 89.5 MP, applies above this).
        max_entries: Archives with more entries are refused.
        max_archive_bytes: Archives whose entries add up to more bytes uncompressed are refused
            (declared sizes checked first, actual bytes counted while reading); also the limit for
            a single file.

    Returns:
        The report: where the set is, what was kept and what was rejected and why.

    Raises:
        ValueError: A bad name or option.
        NoUsableImages: No input gave an image; nothing was written.
    """
    folder = dataset_dir(name)
    collector = _Collector(_Options(resolution, background, fit, max_pixels, max_entries, max_archive_bytes))
    for label, file, size in _open_sources(sources):
        with file:
            collector.add_source(label, file, size)
    if not collector.kept:
        raise NoUsableImages(collector.rejected)
    with atomic_dir(folder) as tmp:
        _write_dataset(tmp, collector)
    return IngestReport(folder, collector.kept, collector.rejected)


def _open_sources(sources: Iterable[Source]) -> Iterator[tuple[str, BinaryIO, int]]:
    """``(label, open binary file, size in bytes)`` per input file, folders expanded in name order."""
    for source in sources:
        if isinstance(source, tuple):
            label, data = source
            yield label, io.BytesIO(data), len(data)
            continue
        path = Path(source)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            label = file.relative_to(path.parent).as_posix() if file != path else path.name
            if not OS_JUNK.search(label):
                yield label, open(file, "rb"), file.stat().st_size


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash (pHash) of one ``[H, W, 3]`` uint8 image.

    The 8x8 lowest frequencies of the 32x32 grey image's DCT, one bit each for above or below their
    median: blind to re-encoding, brightness and small shifts, sensitive to what the picture shows.
    """
    gray = np.asarray(Image.fromarray(image).convert("L").resize((32, 32), Image.Resampling.LANCZOS), np.float64)
    n = np.arange(32)
    dct = np.cos(np.pi * (2 * n[None, :] + 1) * n[:8, None] / 64)  # [8, 32] rows of the DCT-II basis
    low = (dct @ gray @ dct.T).ravel()  # [64]
    return int(np.packbits(low > np.median(low)).view(">u8")[0])


class _Collector:
    """Accumulates kept images and rejections over all inputs, in input order."""

    def __init__(self, options: _Options) -> None:
        self.options = options
        self.kept: list[Kept] = []
        self.rejected: list[Rejection] = []
        self.images: list[np.ndarray] = []  # [R, R, 3] uint8 each, parallel to kept
        self.hashes: list[int] = []  # perceptual hashes, parallel to kept
        self.by_sha256: dict[str, str] = {}  # content hash -> source of the kept image

    def reject(self, source: str, category: Reason, detail: str) -> None:
        self.rejected.append(Rejection(source, category, detail))

    def add_source(self, label: str, file: BinaryIO, size: int) -> None:
        """Take in one input: a zip archive (by content or name) or else one image."""
        head = file.read(4)
        file.seek(0)
        if head in ZIP_MAGIC or label.lower().endswith(".zip"):
            self.add_archive(label, file)
        elif label.lower().endswith(ARCHIVE_SUFFIXES):
            self.reject(label, Reason.UNSUPPORTED, "only zip archives are read; unpack it or zip its images")
        elif size > self.options.max_archive_bytes:
            self.reject(label, Reason.TOO_LARGE, f"{_mib(size)}, over the {_mib(self.options.max_archive_bytes)} limit")
        else:
            self.add_image(label, file.read())

    def add_archive(self, label: str, file: BinaryIO) -> None:
        """Take in every image of a zip archive, or refuse the whole archive as one rejection."""
        marks = len(self.kept), len(self.rejected)
        try:
            with zipfile.ZipFile(file) as archive:
                budget = self.options.max_archive_bytes
                for info in _checked_members(archive.infolist(), self.options):
                    source = f"{label}/{info.filename}"
                    if info.flag_bits & 0x1:
                        self.reject(source, Reason.UNSUPPORTED, "the entry is encrypted")
                        continue
                    data = _read_member(archive, info, budget)
                    budget -= len(data)
                    if data[:4] in ZIP_MAGIC:
                        raise _Rejected(Reason.NESTED_ARCHIVE, f"{info.filename!r} is itself a zip archive; "
                                                               "unpack it and upload its images")
                    self.add_image(source, data)
            if (len(self.kept), len(self.rejected)) == marks:
                raise _Rejected(Reason.EMPTY, "the archive holds no files")
        except _Rejected as e:
            self._rollback(marks)
            self.reject(label, e.category, e.detail)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as e:
            # A bad CRC lands here too, which is how a member longer than its declared size shows up:
            # zipfile stops at the declared size and the checksum of what it read does not match.
            self._rollback(marks)
            self.reject(label, Reason.CORRUPT_ARCHIVE, f"cannot read it as a zip archive ({e})")

    def _rollback(self, marks: tuple[int, int]) -> None:
        """Forget what a refused archive contributed."""
        kept, rejected = marks
        for k in self.kept[kept:]:
            self.by_sha256.pop(k.sha256, None)
        del self.kept[kept:], self.images[kept:], self.hashes[kept:], self.rejected[rejected:]

    def add_image(self, source: str, data: bytes) -> None:
        """Decode, check, square and de-duplicate one image, keeping or rejecting it."""
        sha256 = hashlib.sha256(data).hexdigest()
        if sha256 in self.by_sha256:
            self.reject(source, Reason.DUPLICATE, f"the same bytes as {self.by_sha256[sha256]}")
            return
        try:
            image, size = _prepare(data, self.options)
        except _Rejected as e:
            self.reject(source, e.category, e.detail)
            return
        phash = perceptual_hash(image)
        if self.hashes:
            distances = np.bitwise_count(np.array(self.hashes, np.uint64) ^ np.uint64(phash))
            nearest = int(distances.argmin())
            if distances[nearest] <= NEAR_DUPLICATE_BITS:
                self.reject(source, Reason.DUPLICATE, f"looks the same as {self.kept[nearest].source} "
                                                      f"(perceptual hashes {distances[nearest]} of 64 bits apart)")
                return
        self.kept.append(Kept(source, sha256, size, f"{len(self.kept):05d}.png"))
        self.images.append(image)
        self.hashes.append(phash)
        self.by_sha256[sha256] = source


def _checked_members(members: list[zipfile.ZipInfo], options: _Options) -> list[zipfile.ZipInfo]:
    """The archive's files to read, in archive order, once nothing in its directory is hostile.

    Raises:
        _Rejected: Too many entries, an unsafe path, a symlink, an archive inside, or too many bytes.
    """
    if len(members) > options.max_entries:
        raise _Rejected(Reason.TOO_MANY_ENTRIES, f"{len(members):,} entries, over the {options.max_entries:,} limit")
    for info in members:
        if _unsafe_path(info.filename):
            raise _Rejected(Reason.UNSAFE_PATH, f"entry {info.filename!r} points outside the archive's folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise _Rejected(Reason.SYMLINK, f"entry {info.filename!r} is a symbolic link")
        if not info.is_dir() and info.filename.lower().endswith(ARCHIVE_SUFFIXES):
            raise _Rejected(Reason.NESTED_ARCHIVE, f"entry {info.filename!r} is an archive inside the archive; "
                                                   "unpack it and upload its images")
    declared = sum(info.file_size for info in members)
    if declared > options.max_archive_bytes:
        raise _Rejected(Reason.TOO_LARGE, f"its entries declare {_mib(declared)} uncompressed, over the "
                                          f"{_mib(options.max_archive_bytes)} limit")
    return [info for info in members if not info.is_dir() and not OS_JUNK.search(info.filename)]


def _unsafe_path(name: str) -> bool:
    """Whether an entry name is absolute (POSIX, Windows drive or UNC) or climbs out with ``..``."""
    posix = name.replace("\\", "/")
    return posix.startswith("/") or re.match(r"[A-Za-z]:", posix) is not None or ".." in posix.split("/")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """One member's bytes, reading at most ``budget + 1`` of them whatever its header declares."""
    with archive.open(info) as f:
        data = f.read(budget + 1)
    if len(data) > budget:
        raise _Rejected(Reason.TOO_LARGE, f"its entries hold more than the declared bytes, past the "
                                          f"{_mib(budget)} left under the limit at {info.filename!r}")
    return data


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# -- one image ------------------------------------------------------------------------------------------


def _prepare(data: bytes, options: _Options) -> tuple[np.ndarray, tuple[int, int]]:
    """One image's bytes -> ``([R, R, 3] uint8, original (w, h) as displayed)``.

    Raises:
        _Rejected: Why the bytes give no usable image.
    """
    if not data:
        raise _Rejected(Reason.EMPTY, "the file has no bytes")
    image, size = _decode(data, options)
    try:
        ImageOps.exif_transpose(image, in_place=True)
        image = _to_rgb(image)
    except ValueError as e:  # a colour mode Pillow cannot convert to RGB, such as LAB
        raise _Rejected(Reason.UNSUPPORTED, f"colour mode {image.mode} ({e})") from None
    return np.asarray(_flatten(_square(image, options), options.background)), size


def _decode(data: bytes, options: _Options) -> tuple[Image.Image, tuple[int, int]]:
    """Check the header against the limits, then decode (the first frame); returns ``(image, size)``."""
    # The warning filter is process-wide and another thread may reset it meanwhile; the limit holds all
    # the same while max_pixels is under Pillow's 89.5 MP: a warning only printed still meets _check_size.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=DECODERS)
            w, h = image.size
            _check_size(w, h, options)
            if image.format in ("JPEG", "MPO"):
                # Let libjpeg scale down by 1/2..1/8 while decoding (far faster on big photos) while
                # keeping at least twice the pixels the resize needs, so quality is unchanged.
                scale = 2 * options.resolution / (min(w, h) if options.fit == "crop" else max(w, h))
                if scale < 1:
                    image.draft(None, (math.ceil(w * scale), math.ceil(h * scale)))
            orientation = image.getexif().get(ExifTags.Base.Orientation)
            image.load()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise _Rejected(Reason.PIXEL_LIMIT, f"Pillow refused it as a possible decompression bomb ({e})") from None
        except UnidentifiedImageError:
            raise _Rejected(*_unidentified(data)) from None
        except _Rejected:
            raise
        except Exception as e:  # Pillow's decoders raise many types on damaged data; none may stop the rest
            raise _Rejected(Reason.TRUNCATED, f"its image data ends early or is damaged ({e})") from None
    return image, (h, w) if orientation in (5, 6, 7, 8) else (w, h)  # 5-8 turn the picture a quarter


def _check_size(w: int, h: int, options: _Options) -> None:
    """Reject by the header's size, before any pixel is decoded."""
    if w * h > options.max_pixels:
        raise _Rejected(Reason.PIXEL_LIMIT, f"{w}x{h} is {w * h / 1e6:.1f} megapixels, over the "
                                            f"{options.max_pixels / 1e6:g} megapixel limit")
    side, which = (min(w, h), "short") if options.fit == "crop" else (max(w, h), "long")
    if side * 2 < options.resolution:
        raise _Rejected(Reason.TOO_SMALL, f"{w}x{h}: its {which} side is under half the {options.resolution} px "
                                          "resolution")


def _unidentified(data: bytes) -> tuple[Reason, str]:
    """Category and detail for bytes none of the accepted decoders recognise."""
    try:  # only names the format: opening reads the header and decodes nothing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as other:
                return Reason.UNSUPPORTED, f"{other.format} is not accepted; use {ACCEPTED}"
    except Exception:
        return Reason.NOT_AN_IMAGE, f"not a {ACCEPTED} file"


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode -> ``RGB``, or ``RGBA`` where the image has transparency."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # 16-bit (and 32-bit) grey: Pillow's own conversion clips at 255, so scale 65535 -> 255 instead.
        image = Image.fromarray((np.asarray(image, np.float32) / 257).round().clip(0, 255).astype(np.uint8))
    transparent = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    return image.convert("RGBA" if transparent else "RGB")


def _square(image: Image.Image, options: _Options) -> Image.Image:
    """Centre-crop or pad to a square and resize to ``resolution`` with Lanczos (pad leaves clear edges)."""
    r, (w, h) = options.resolution, image.size
    lanczos = Image.Resampling.LANCZOS
    if options.fit == "crop":
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        return image.resize((r, r), lanczos, box=box, reducing_gap=REDUCING_GAP)
    scale = r / max(w, h)
    inner = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), lanczos, reducing_gap=REDUCING_GAP)
    canvas = Image.new("RGBA", (r, r), (0, 0, 0, 0))
    canvas.paste(inner.convert("RGBA"), ((r - inner.width) // 2, (r - inner.height) // 2))
    return canvas


def _flatten(image: Image.Image, background: Background) -> Image.Image:
    """Composite an ``RGBA`` image on the background colour; ``RGB`` passes through."""
    if image.mode == "RGB":
        return image
    return Image.alpha_composite(Image.new("RGBA", image.size, BACKGROUNDS[background] + (255,)), image).convert("RGB")


# -- output ---------------------------------------------------------------------------------------------


def _write_dataset(folder: Path, collector: _Collector) -> None:
    """Write images, manifest, report and contact sheet into ``folder`` (atomic_dir's temporary one)."""
    o = collector.options
    for kept, image in zip(collector.kept, collector.images):
        (folder / kept.file).write_bytes(png_bytes(image))
    manifest = {"resolution": o.resolution, "background": o.background, "fit": o.fit,
                "images": [k.to_json() for k in collector.kept]}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (folder / "report.json").write_text(json.dumps({"rejected": [r.to_json() for r in collector.rejected]}, indent=1))
    (folder / "contact.png").write_bytes(png_bytes(contact_sheet(collector.images)))


def contact_sheet(images: list[np.ndarray], width: int = 1024) -> np.ndarray:
    """A grid of thumbnails of ``[R, R, 3]`` uint8 images, at most about ``width`` pixels wide."""
    cols = math.ceil(math.sqrt(len(images)))
    side = min(images[0].shape[0], max(16, width // cols))
    thumbs = [np.asarray(Image.fromarray(im).resize((side, side), Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP))
              for im in images]
    return grid(np.stack(thumbs), cols)
