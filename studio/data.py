"""Artwork ingestion: uploaded files and zip archives -> a validated, de-duplicated, square image set.

``ingest`` checks each input's size (a file's from the file system, a zip member's as declared) against
a per-image and a per-ingest byte limit before reading it, then reads it in bounded chunks (nothing from
an upload is ever extracted to disk, unpickled or handed to a decoder outside the six accepted formats),
turns each image into a ``resolution`` x ``resolution`` RGB square, drops exact duplicates, flags near
duplicates (the same structure and the same colours; dropped only when asked) and writes the set under
``STUDIO_HOME/datasets/<name>/`` in one atomic step, refusing to replace an existing set unless asked:

- ``00000.png`` ...: the images, in input order;
- ``manifest.json``: per image its source name, the sha256 of the original bytes, the original size
  ``[w, h]`` (as displayed, EXIF rotation applied) and the output file;
- ``report.json``: every rejected input and why, and every near duplicate kept and what it resembles;
- ``contact.png``: a contact sheet of the kept images.

``load_dataset`` gives the training loop the set as one ``[N, 3, R, R]`` tensor in [-1, 1].
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import stat
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from studio.media import grid, png_bytes
from studio.storage import NAME, check_name, datasets_dir, swap_dir

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

# Pillow's reduce-then-resample shortcut: with a gap of 3 the result is indistinguishable from a full
# Lanczos pass (Pillow's documentation) at a fraction of the cost on large photos.
REDUCING_GAP = 3.0
# Byte limits an artist should never meet: one image may be as large as the biggest picture the default
# 40-megapixel limit lets through, stored uncompressed (8-bit RGB TIFF or BMP, 120 MB; a phone photo
# is 3-12 MB, a 600 dpi A3 scan as PNG 50-100 MB); one ingest may read a thousand 4 MB phone photos,
# several times what a fine-tune needs. Both are checked before reading and again while reading.
MAX_IMAGE_BYTES = 128 * 2**20
MAX_TOTAL_BYTES = 4 * 2**30
READ_CHUNK = 2**20  # files and zip members are read this much at a time, so a limit cuts a read short
# Two images have the same structure when their 64-bit perceptual hashes differ in at most this many
# bits. Measured on 320 default-model eyes at 128 px: re-encoding as JPEG (quality 30-95), brightness
# +-20% (scaled or shifted), a 1-pixel shift flip at most 6 bits, a 2% crop at most 10 (mean 4);
# distinct drawings differ by 12 or more (mean 30). The hash sees luminance only, so one drawing in
# other colours (the same seed under another eye colour) often falls within 8 too: the colour
# signature below tells those apart.
NEAR_DUPLICATE_BITS = 8
# ... and the same colours when no cell of their colour signatures (mean colours on a COLOUR_CELLS
# square grid) is more than NEAR_DUPLICATE_COLOUR apart in OKLab x 100 (about 1 is the smallest visible
# step), once a uniform change of lightness is taken out. Measured at 128 px by `python -m studio bench
# dedup --seeds 64 --compositions 64`: JPEG quality 30-90, brightness x0.9 and x1.1 and 1-pixel shifts
# (the largest, as flat shapes cross cell borders) move a signature by at most 4.0 (95th percentile
# 2.8, 1,023 copies); of the distinct works that share a structure (one seed under two eye colours, one
# composition in two palettes: 693 pairs) the closest pair is 5.6 apart (5th percentile 9.7).
COLOUR_CELLS = 8
NEAR_DUPLICATE_COLOUR = 5.0


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


@dataclass(frozen=True)
class NearDuplicate:
    """An image that looks like an earlier one: the same structure and the same colours.

    Attributes:
        source: The image's input name.
        file: Its PNG in the data set.
        resembles: The input name of the earlier image it looks like.
        resembles_file: That image's PNG in the data set.
        hash_bits: How many of the 64 perceptual-hash bits differ (at most ``NEAR_DUPLICATE_BITS``).
        colour_distance: The colour signatures' distance (at most ``NEAR_DUPLICATE_COLOUR``).
    """

    source: str
    file: str
    resembles: str
    resembles_file: str
    hash_bits: int
    colour_distance: float

    @property
    def detail(self) -> str:
        """What it resembles and how closely, for people."""
        return (f"looks the same as {self.resembles} (perceptual hashes {self.hash_bits} of 64 bits apart, "
                f"colours {self.colour_distance:.1f} apart)")

    def to_json(self) -> dict:
        """Every field, the distance rounded to 0.01."""
        return {"source": self.source, "file": self.file, "resembles": self.resembles,
                "resembles_file": self.resembles_file, "hash_bits": self.hash_bits,
                "colour_distance": round(self.colour_distance, 2)}


@dataclass
class IngestReport:
    """What ``ingest`` wrote: the folder, kept images in order, rejected inputs, near duplicates kept."""

    dataset: Path
    kept: list[Kept]
    rejected: list[Rejection]
    near_duplicates: list[NearDuplicate] = field(default_factory=list)

    def to_json(self) -> dict:
        """``{"dataset": str, "kept": [...], "rejected": [{"source", "reason"}, ...], "near_duplicates": [...]}``."""
        return {"dataset": str(self.dataset), "kept": [k.to_json() for k in self.kept],
                "rejected": [r.to_json() for r in self.rejected],
                "near_duplicates": [n.to_json() for n in self.near_duplicates]}


class DatasetExists(ValueError):
    """A data set of that name exists and ``overwrite`` was not asked for; nothing was written."""

    def __init__(self, name: str, images: int) -> None:
        super().__init__(f"data set {name!r} already exists ({images} image{'s' if images != 1 else ''}); "
                         "to replace it, ingest again with --overwrite (overwrite=True), or choose another name")
        self.name = name
        self.images = images


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
    max_image_bytes: int
    max_total_bytes: int
    drop_near_duplicates: bool

    def __post_init__(self) -> None:
        if not 8 <= self.resolution <= 2048:
            raise ValueError(f"resolution must be 8 to 2048 pixels, not {self.resolution}")
        if min(self.max_pixels, self.max_entries, self.max_image_bytes, self.max_total_bytes) < 1:
            raise ValueError("the pixel, entry and byte limits must be positive")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be white or black, not {self.background!r}")
        if self.fit not in ("crop", "pad"):
            raise ValueError(f"fit must be crop or pad, not {self.fit!r}")


# -- names and folders ----------------------------------------------------------------------------------


def dataset_dir(name: str) -> Path:
    """The folder of data set ``name``, a name that ``storage.check_name`` accepts."""
    return datasets_dir() / check_name(name, "data set")


def list_datasets() -> list[str]:
    """Names of the complete data sets, sorted."""
    root = datasets_dir()
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
        raise FileNotFoundError(f"no data set named {name!r} in {datasets_dir()}; make one with: "
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
           fit: Fit = "crop", overwrite: bool = False, drop_near_duplicates: bool = False,
           max_pixels: int = 40_000_000, max_entries: int = 10_000, max_image_bytes: int = MAX_IMAGE_BYTES,
           max_total_bytes: int = MAX_TOTAL_BYTES) -> IngestReport:
    """Turn image files and zip archives into data set ``name``.

    Args:
        sources: File paths (a folder stands for every file under it) or ``(name, bytes)`` pairs; each
            is an image or a zip archive, told apart by content.
        name: The data set's name (``storage.check_name``: letters, digits, ``.``, ``_``, ``-``).
        resolution: Side of the square output images, in pixels.
        background: Colour that transparency is composited on, and that ``pad`` fills with.
        fit: ``crop`` the centre square, or ``pad`` the whole image out to a square.
        overwrite: Replace an existing data set of this name (in one atomic swap, once the new one is
            complete); without it an existing set is refused before any input is read.
        drop_near_duplicates: Reject near duplicates (reason ``duplicate``) instead of keeping and
            flagging them.
        max_pixels: Images whose header declares more pixels are rejected before decoding (Pillow's
            own decompression-bomb limit, 89.5 MP, applies above this).
        max_entries: Archives with more entries are refused.
        max_image_bytes: Files and archive entries larger than this are rejected before reading, by
            their size on disk or declared size, and cut off at it while reading.
        max_total_bytes: The bytes one ingest reads at most, files and archive entries together; an
            archive whose entries declare more than is left is refused whole.

    Returns:
        The report: where the set is, what was kept, what was rejected and why, and which kept images
        are near duplicates of which.

    Raises:
        ValueError: A bad name or option.
        DatasetExists: The set exists and ``overwrite`` is false: checked before any input is read (and
            again before the new set would appear); nothing was written.
        NoUsableImages: No input gave an image; nothing was written.
    """
    folder = dataset_dir(name)
    options = _Options(resolution, background, fit, max_pixels, max_entries, max_image_bytes, max_total_bytes,
                       drop_near_duplicates)
    if not overwrite:
        _refuse_existing(name)
    collector = _Collector(options)
    for label, file, size in _open_sources(sources):
        with file:
            collector.add_source(label, file, size)
    if not collector.kept:
        raise NoUsableImages(collector.rejected)
    with swap_dir(folder) as tmp:
        _write_dataset(tmp, collector)
        if not overwrite:
            _refuse_existing(name)  # made by another ingest while this one read: leave theirs in place
    return IngestReport(folder, collector.kept, collector.rejected, collector.near_duplicates)


def _refuse_existing(name: str) -> None:
    """Raise ``DatasetExists`` when data set ``name`` is complete on disk."""
    folder = dataset_dir(name)
    if (folder / "manifest.json").is_file():
        raise DatasetExists(name, sum(1 for _ in folder.glob("[0-9][0-9][0-9][0-9][0-9].png")))


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
                f = open(file, "rb")
                yield label, f, os.fstat(f.fileno()).st_size  # the size of the file read, not of a path


def _read_bounded(file: BinaryIO, limit: int) -> bytes | None:
    """All of ``file``'s bytes, read ``READ_CHUNK`` at a time; None once it holds more than ``limit``."""
    data = bytearray()
    while chunk := file.read(min(READ_CHUNK, limit + 1 - len(data))):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash (pHash) of one ``[H, W, 3]`` uint8 image.

    The 8x8 lowest frequencies of the 32x32 grey image's DCT, one bit each for above or below their
    median: blind to re-encoding, brightness and small shifts, sensitive to what the picture shows,
    blind to its colours.
    """
    gray = np.asarray(Image.fromarray(image).convert("L").resize((32, 32), Image.Resampling.LANCZOS), np.float64)
    n = np.arange(32)
    dct = np.cos(np.pi * (2 * n[None, :] + 1) * n[:8, None] / 64)  # [8, 32] rows of the DCT-II basis
    low = (dct @ gray @ dct.T).ravel()  # [64]
    return int(np.packbits(low > np.median(low)).view(">u8")[0])


def colour_signature(image: np.ndarray) -> np.ndarray:
    """The mean colour of each cell of a ``COLOUR_CELLS`` square grid, in OKLab x 100: ``[cells, 3]`` float32.

    The cells are soft (Pillow's bilinear downscale weighs pixels by a tent over two cells), so a
    shape that moves a pixel across a cell border changes the means little. OKLab, so that one
    distance means about the same visible difference in every hue and lightness.
    """
    cells = Image.fromarray(image).resize((COLOUR_CELLS, COLOUR_CELLS), Image.Resampling.BILINEAR)
    return _oklab(np.asarray(cells, np.float32).reshape(-1, 3) / 255) * 100


def _oklab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] ``[..., 3]`` -> OKLab ``[..., 3]`` (Björn Ottosson's published matrices)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    lms = np.cbrt(linear @ _RGB_TO_LMS.T)
    return lms @ _LMS_TO_LAB.T


_RGB_TO_LMS = np.array([[0.4122214708, 0.5363325363, 0.0514459929], [0.2119034982, 0.6806995451, 0.1073969566],
                        [0.0883024619, 0.2817188376, 0.6299787005]], np.float32)
_LMS_TO_LAB = np.array([[0.2104542553, 0.7936177850, -0.0040720468], [1.9779984951, -2.4285922050, 0.4505937099],
                        [0.0259040371, 0.7827717662, -0.8086757660]], np.float32)


@dataclass(frozen=True, eq=False)
class Fingerprint:
    """What near-duplicate detection compares: an image's structure and its colours.

    Attributes:
        phash: The perceptual hash (luminance structure).
        colours: The colour signature, ``[cells, 3]``.
    """

    phash: int
    colours: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray) -> Fingerprint:
        """The fingerprint of one ``[H, W, 3]`` uint8 image."""
        return cls(perceptual_hash(image), colour_signature(image))

    def hash_bits(self, other: Fingerprint) -> int:
        """How many perceptual-hash bits differ."""
        return (self.phash ^ other.phash).bit_count()

    def colour_distance(self, other: Fingerprint) -> float:
        """The largest OKLab distance between corresponding cells, less the mean change of lightness.

        The largest, because one recoloured region (an iris) makes another work; the lightness change
        common to all cells is taken out, because a brighter or darker copy is still a copy.
        """
        difference = self.colours - other.colours  # [cells, 3]
        difference[:, 0] -= difference[:, 0].mean()
        return float(np.linalg.norm(difference, axis=-1).max())

    def same_structure(self, other: Fingerprint) -> bool:
        """Perceptual hashes at most ``NEAR_DUPLICATE_BITS`` apart (the rule before colour was seen)."""
        return self.hash_bits(other) <= NEAR_DUPLICATE_BITS

    def resembles(self, other: Fingerprint) -> bool:
        """The same structure and the same colours: a near duplicate."""
        return self.same_structure(other) and self.colour_distance(other) <= NEAR_DUPLICATE_COLOUR


class _Collector:
    """Accumulates kept images and rejections over all inputs, in input order."""

    def __init__(self, options: _Options) -> None:
        self.options = options
        self.kept: list[Kept] = []
        self.rejected: list[Rejection] = []
        self.near_duplicates: list[NearDuplicate] = []  # kept images that look like an earlier kept one
        self.images: list[np.ndarray] = []  # [R, R, 3] uint8 each, parallel to kept
        self.fingerprints: list[Fingerprint] = []  # parallel to kept
        self.by_sha256: dict[str, str] = {}  # content hash -> source of the kept image
        self.budget = options.max_total_bytes  # bytes this ingest may still read

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
        else:
            try:
                data = self.read(file, size, self.byte_limit(size))
            except _Rejected as e:
                self.reject(label, e.category, e.detail)
                return
            self.add_image(label, data)

    def byte_limit(self, size: int) -> int:
        """How many bytes an input of ``size`` bytes (on disk, or declared) may be read to.

        Raises:
            _Rejected: ``size`` is over the per-image limit or over what is left of the budget.
        """
        if size > self.options.max_image_bytes:
            raise _Rejected(Reason.TOO_LARGE, f"{_size(size)}, {self.limit_text(self.options.max_image_bytes)}")
        if size > self.budget:
            raise _Rejected(Reason.TOO_LARGE, f"{_size(size)}; {self.limit_text(self.budget)}")
        return min(self.options.max_image_bytes, self.budget)

    def limit_text(self, limit: int) -> str:
        """The limit that ``limit`` bytes stands for, in words: the per-image one or what is left of the budget."""
        total = self.options.max_total_bytes
        if limit == self.options.max_image_bytes:
            return f"the limit is {_size(limit)} per image"
        if limit == total:
            return f"the limit is {_size(total)} per data set"
        return f"only {_size(limit)} is left of the {_size(total)} limit per data set"

    def read(self, file: BinaryIO, size: int, limit: int) -> bytes:
        """Read ``file`` to its end, but never past ``limit``; the bytes read are spent from the budget.

        Raises:
            _Rejected: The file held more than ``limit`` bytes (it grew, or its size lied).
        """
        data = _read_bounded(file, limit)
        if data is None:
            why = self.limit_text(limit)
            self.budget -= limit
            raise _Rejected(Reason.TOO_LARGE, f"more than {_size(limit)} when read, though its size said "
                                              f"{_size(size)}; {why}")
        self.budget -= len(data)
        return data

    def add_archive(self, label: str, file: BinaryIO) -> None:
        """Take in every image of a zip archive, or refuse the whole archive as one rejection."""
        marks = len(self.kept), len(self.rejected), len(self.near_duplicates)
        try:
            with zipfile.ZipFile(file) as archive:
                members = _checked_members(archive.infolist(), self.options)
                declared = sum(info.file_size for info in members)
                if declared > self.budget:
                    raise _Rejected(Reason.TOO_LARGE, f"its entries declare {_size(declared)} uncompressed; "
                                                      f"{self.limit_text(self.budget)}")
                for info in members:
                    self.add_member(archive, info, f"{label}/{info.filename}")
            if (len(self.kept), len(self.rejected)) == marks[:2]:
                raise _Rejected(Reason.EMPTY, "the archive holds no files")
        except _Rejected as e:
            self._rollback(marks)
            self.reject(label, e.category, e.detail)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, zlib.error) as e:
            # A bad CRC lands here too, which is how a member longer than its declared size shows up:
            # zipfile stops at the declared size and the checksum of what it read does not match.
            # zlib.error: a member's compressed bytes are damaged.
            self._rollback(marks)
            self.reject(label, Reason.CORRUPT_ARCHIVE, f"cannot read it as a zip archive ({e})")

    def add_member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> None:
        """Take in one archive entry, checking its declared size before opening it.

        Raises:
            _Rejected: The entry is itself a zip archive (which refuses the whole archive).
        """
        if info.flag_bits & 0x1:
            self.reject(source, Reason.UNSUPPORTED, "the entry is encrypted")
            return
        try:
            limit = self.byte_limit(info.file_size)
            with archive.open(info) as f:
                data = self.read(f, info.file_size, limit)
        except _Rejected as e:
            self.reject(source, e.category, e.detail)
            return
        if data[:4] in ZIP_MAGIC:
            raise _Rejected(Reason.NESTED_ARCHIVE, f"{info.filename!r} is itself a zip archive; "
                                                   "unpack it and upload its images")
        self.add_image(source, data)

    def _rollback(self, marks: tuple[int, int, int]) -> None:
        """Forget what a refused archive contributed."""
        kept, rejected, near = marks
        for k in self.kept[kept:]:
            self.by_sha256.pop(k.sha256, None)
        del self.kept[kept:], self.images[kept:], self.fingerprints[kept:], self.rejected[rejected:]
        del self.near_duplicates[near:]

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
        fingerprint = Fingerprint.of(image)
        file = f"{len(self.kept):05d}.png"
        near = self.resembled(source, file, fingerprint)
        if near and self.options.drop_near_duplicates:
            self.reject(source, Reason.DUPLICATE, near.detail)
            return
        if near:
            self.near_duplicates.append(near)
        self.kept.append(Kept(source, sha256, size, file))
        self.images.append(image)
        self.fingerprints.append(fingerprint)
        self.by_sha256[sha256] = source

    def resembled(self, source: str, file: str, fingerprint: Fingerprint) -> NearDuplicate | None:
        """The kept image that ``fingerprint`` resembles in colour most closely, if any."""
        if not self.fingerprints:
            return None
        hashes = np.array([f.phash for f in self.fingerprints], np.uint64)
        bits = np.bitwise_count(hashes ^ np.uint64(fingerprint.phash))
        same_structure = np.flatnonzero(bits <= NEAR_DUPLICATE_BITS)
        distances = [fingerprint.colour_distance(self.fingerprints[i]) for i in same_structure]
        if not distances or min(distances) > NEAR_DUPLICATE_COLOUR:
            return None
        best = same_structure[int(np.argmin(distances))]
        return NearDuplicate(source, file, self.kept[best].source, self.kept[best].file, int(bits[best]),
                             min(distances))


def _checked_members(members: list[zipfile.ZipInfo], options: _Options) -> list[zipfile.ZipInfo]:
    """The archive's files to read, in archive order, once nothing in its directory is hostile.

    Raises:
        _Rejected: Too many entries, an unsafe path, a symlink or an archive inside.
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
    return [info for info in members if not info.is_dir() and not OS_JUNK.search(info.filename)]


def _unsafe_path(name: str) -> bool:
    """Whether an entry name is absolute (POSIX, Windows drive or UNC) or climbs out with ``..``."""
    posix = name.replace("\\", "/")
    return posix.startswith("/") or re.match(r"[A-Za-z]:", posix) is not None or ".." in posix.split("/")


def _size(n: int) -> str:
    """A byte count for people: ``300 MiB``, ``1.5 KiB``, ``12 bytes``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


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
    """Write images, manifest, report and contact sheet into ``folder`` (swap_dir's new version)."""
    o = collector.options
    for kept, image in zip(collector.kept, collector.images):
        (folder / kept.file).write_bytes(png_bytes(image))
    manifest = {"resolution": o.resolution, "background": o.background, "fit": o.fit,
                "images": [k.to_json() for k in collector.kept]}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    report = {"rejected": [r.to_json() for r in collector.rejected],
              "near_duplicates": [n.to_json() for n in collector.near_duplicates]}
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    (folder / "contact.png").write_bytes(png_bytes(contact_sheet(collector.images)))


def contact_sheet(images: list[np.ndarray], width: int = 1024) -> np.ndarray:
    """A grid of thumbnails of ``[R, R, 3]`` uint8 images, at most about ``width`` pixels wide."""
    cols = math.ceil(math.sqrt(len(images)))
    side = min(images[0].shape[0], max(16, width // cols))
    thumbs = [np.asarray(Image.fromarray(im).resize((side, side), Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP))
              for im in images]
    return grid(np.stack(thumbs), cols)
