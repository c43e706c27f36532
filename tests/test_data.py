"""Ingestion on a corpus made here: every format and colour mode, every rejection, hostile zips, the CLI."""

import hashlib
import io
import itertools
import json
import os
import re
import stat
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio import bench, data, media, storage
from studio.__main__ import main
from studio.data import Reason

R = 32  # output resolution of most tests: small and fast
ROOT = Path(__file__).resolve().parents[1]


def art(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A smooth random colour field: each seed a clearly different picture to a perceptual hash."""
    blobs = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(blobs).resize(size, Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def zip_bytes(entries: dict[str, bytes], **infos: zipfile.ZipInfo) -> bytes:
    """A deflated zip of ``name -> bytes``; ``infos`` adds hand-made entries (symlinks, odd flags)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in entries.items():
            z.writestr(name, content)
        for info in infos.values():
            z.writestr(info, b"/etc/passwd")
    return buf.getvalue()


def ingest(sources: list, name: str = "set", **kwargs) -> data.IngestReport:
    return data.ingest(sources, name, kwargs.pop("resolution", R), **kwargs)


def output(report: data.IngestReport, index: int = 0) -> np.ndarray:
    """The ``index``-th kept image as written, ``[R, R, 3]`` uint8."""
    return np.asarray(Image.open(report.dataset / report.kept[index].file))


def only_rejection(report: data.IngestReport) -> data.Rejection:
    assert len(report.rejected) == 1, report.rejected
    return report.rejected[0]


GOOD = ("good.png", encode(art(0), "PNG"))  # keeps a data set written when the input under test is refused


# -- formats and colour modes -----------------------------------------------------------------------------


def test_every_format_is_kept_as_an_rgb_square(home: Path) -> None:
    two_frames = [art(7).convert("P"), art(8).convert("P")]
    sources = [("a.png", encode(art(1), "PNG")), ("b.jpg", encode(art(2), "JPEG", quality=95)),
               ("c.webp", encode(art(3), "WEBP", quality=95)), ("d.bmp", encode(art(4), "BMP")),
               ("e.tiff", encode(art(5), "TIFF")), ("f.gif", encode(two_frames[0], "GIF", save_all=True,
                                                                     append_images=two_frames[1:]))]
    report = ingest(sources)
    assert [k.source for k in report.kept] == [s for s, _ in sources] and not report.rejected
    assert [k.file for k in report.kept] == [f"{i:05d}.png" for i in range(6)]
    for i, seed in enumerate([1, 2, 3, 4, 5]):
        expected = np.asarray(art(seed).resize((R, R), Image.Resampling.LANCZOS), np.float32)
        assert np.abs(output(report, i) - expected).mean() < 4  # the same picture, downscaled
    gif = output(report, 5).astype(np.float32)
    first, second = (np.asarray(f.convert("RGB").resize((R, R), Image.Resampling.LANCZOS), np.float32)
                     for f in two_frames)
    assert np.abs(gif - first).mean() < 4 < np.abs(gif - second).mean()


@pytest.mark.parametrize(("background", "value"), [("white", 255), ("black", 0)])
def test_transparency_is_composited_on_the_background(home: Path, background: str, value: int) -> None:
    rgba = art(1).convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 32, 32))  # the top-left quadrant fully transparent
    palette = art(2).quantize(255)  # indices 0 to 254 for the picture; 255 for clear
    palette.putpalette(palette.getpalette()[: 255 * 3] + [0, 0, 0])
    palette.paste(255, (0, 0, 32, 32))
    sources = [("rgba.png", encode(rgba, "PNG")), ("palette.png", encode(palette, "PNG", transparency=255))]
    report = ingest(sources, background=background)
    assert len(report.kept) == 2
    for i in range(2):
        image = output(report, i)
        assert image[2, 2].tolist() == [value] * 3  # a transparent pixel
        assert np.abs(image[R - 3, R - 3].astype(int) - value).max() > 0  # an opaque one keeps its colour


def test_grey_16_bit_palette_and_cmyk_become_rgb(home: Path) -> None:
    grey16 = np.full((64, 64), 65535, np.uint16)
    grey16[:, 32:] = 32896  # 32896 / 257 = 128
    cmyk_red = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # no cyan, full magenta and yellow
    sources = [("grey16.png", encode(Image.fromarray(grey16), "PNG")), ("cmyk.jpg", encode(cmyk_red, "JPEG")),
               ("palette.png", encode(art(3).convert("P"), "PNG")), ("grey.png", encode(art(4).convert("L"), "PNG"))]
    report = ingest(sources)
    assert len(report.kept) == 4
    grey, cmyk, palette, plain_grey = (output(report, i) for i in range(4))
    assert grey[:, 2].tolist() == [[255] * 3] * R and grey[:, R - 3].tolist() == [[128] * 3] * R  # scaled, not clipped
    assert np.abs(cmyk[R // 2, R // 2].astype(int) - [255, 0, 0]).max() <= 3
    assert np.abs(palette.astype(float) - np.asarray(art(3).resize((R, R), Image.Resampling.LANCZOS))).mean() < 8
    assert (plain_grey[..., 0] == plain_grey[..., 2]).all()


def test_exif_orientation_is_applied(home: Path) -> None:
    stored = Image.new("RGB", (64, 48), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 24, 24))  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the stored top-left goes top-right
    report = ingest([("phone.jpg", encode(stored, "JPEG", quality=95, exif=exif.tobytes()))])
    image = output(report).astype(int)
    assert report.kept[0].size == (48, 64)  # as displayed: portrait
    assert image[3, R - 4].tolist() == pytest.approx([255, 0, 0], abs=12)  # top right is red
    for y, x in [(3, 3), (R - 4, R - 4)]:
        assert image[y, x].tolist() == pytest.approx([0, 0, 255], abs=12)


@pytest.mark.parametrize("background", ["white", "black"])
def test_crop_fills_the_square_and_pad_shows_everything(home: Path, background: str) -> None:
    wide = encode(art(1, (96, 48)), "PNG")
    cropped = output(ingest([("wide.png", wide)], "crop", background=background))
    padded = output(ingest([("wide.png", wide)], "pad", fit="pad", background=background))
    fill = 255 if background == "white" else 0
    centre = np.asarray(art(1, (96, 48)).crop((24, 0, 72, 48)).resize((R, R), Image.Resampling.LANCZOS))
    assert np.abs(cropped.astype(int) - centre).mean() < 2
    assert (padded[:7] == fill).all() and (padded[-7:] == fill).all()  # 96x48 -> 32x16 in rows 8 to 23
    whole = np.asarray(art(1, (96, 48)).resize((R, R // 2), Image.Resampling.LANCZOS))
    assert np.abs(padded[9:23].astype(int) - whole[1:15]).mean() < 2


# -- rejections -----------------------------------------------------------------------------------------


def bomb_png(width: int, height: int) -> bytes:
    """A PNG header declaring ``width`` x ``height`` followed by a few bytes of image data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"\x78\x9c\x03\x00") + chunk(b"IEND", b""))


@pytest.mark.parametrize(("name", "content", "category", "words"), [
    ("noise.png", bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)), Reason.NOT_AN_IMAGE,
     "not a PNG, JPEG"),
    ("notes.txt", b"just some text\n" * 10, Reason.NOT_AN_IMAGE, "not a PNG, JPEG"),
    ("half.png", encode(art(1), "PNG")[:1500], Reason.TRUNCATED, "ends early"),
    ("half.jpg", encode(art(1), "JPEG")[:600], Reason.TRUNCATED, "ends early"),
    ("empty.png", b"", Reason.EMPTY, "no bytes"),
    ("tiny.png", encode(art(1, (15, 40)), "PNG"), Reason.TOO_SMALL, "short side is under half the 32 px"),
    # Pillow's own bomb check (over 89.5 MP) fires while reading the header
    ("bomb.png", encode(Image.new("1", (10000, 10000)), "PNG"), Reason.PIXEL_LIMIT, "decompression bomb"),
    # under Pillow's limit but over ours: refused by the header alone (decoding would report truncation)
    ("big.png", bomb_png(7000, 7000), Reason.PIXEL_LIMIT, "7000x7000 is 49.0 megapixels, over the 40 megapixel"),
    ("old.ppm", encode(art(1), "PPM"), Reason.UNSUPPORTED, "PPM is not accepted"),
    ("icon.ico", encode(art(1), "ICO"), Reason.UNSUPPORTED, "ICO is not accepted"),
    ("photos.tar", b"x" * 600, Reason.UNSUPPORTED, "only zip archives"),
])
def test_each_bad_input_is_rejected_with_its_reason(home: Path, name: str, content: bytes, category: Reason,
                                                    words: str) -> None:
    report = ingest([GOOD, (name, content)])
    rejection = only_rejection(report)
    assert (rejection.source, rejection.category) == (name, category)
    assert words in rejection.detail and rejection.reason.startswith(f"{category}: ")
    assert [k.source for k in report.kept] == ["good.png"]


def test_size_limits_follow_the_options(home: Path) -> None:
    tall = encode(art(1, (15, 40)), "PNG")  # short side under 32 / 2, long side over it
    assert [k.source for k in ingest([("tall.png", tall)], "t", fit="pad").kept] == ["tall.png"]
    big = ("big.png", encode(art(1, (100, 100)), "PNG"))
    assert only_rejection(ingest([GOOD, big], "p", max_pixels=9999)).category is Reason.PIXEL_LIMIT
    assert [k.source for k in ingest([("edge.png", encode(art(1, (16, 16)), "PNG"))], "e").kept] == ["edge.png"]


def brighter_jpeg(image: Image.Image) -> bytes:
    """A near copy: 12 levels brighter, then re-encoded as JPEG."""
    return encode(Image.fromarray(np.clip(np.asarray(image, int) + 12, 0, 255).astype(np.uint8)), "JPEG", quality=80)


def test_exact_duplicates_are_dropped_and_near_duplicates_kept_and_flagged(home: Path) -> None:
    original = encode(art(5), "PNG")
    distinct = [(f"art{s}.png", encode(art(s), "PNG")) for s in range(10, 30)]
    report = ingest([("a.png", original), ("copy.png", original), ("near.jpg", brighter_jpeg(art(5))), *distinct])
    assert [k.source for k in report.kept] == ["a.png", "near.jpg", *(n for n, _ in distinct)]
    exact = only_rejection(report)
    assert (exact.source, exact.category, exact.detail) == ("copy.png", Reason.DUPLICATE, "the same bytes as a.png")
    [near] = report.near_duplicates
    assert (near.source, near.file, near.resembles, near.resembles_file) == ("near.jpg", "00001.png", "a.png",
                                                                             "00000.png")
    assert near.hash_bits <= data.NEAR_DUPLICATE_BITS and near.colour_distance <= data.NEAR_DUPLICATE_COLOUR
    written = json.loads((report.dataset / "report.json").read_text())
    assert written["near_duplicates"] == [near.to_json()] and written["rejected"] == [exact.to_json()]
    assert near.to_json()["resembles"] == "a.png" and len(data.load_dataset("set")) == 22


def test_near_duplicates_are_dropped_when_asked(home: Path) -> None:
    sources = [("a.png", encode(art(5), "PNG")), ("near.jpg", brighter_jpeg(art(5))), ("b.png", encode(art(6), "PNG"))]
    report = ingest(sources, drop_near_duplicates=True)
    assert [k.source for k in report.kept] == ["a.png", "b.png"] and not report.near_duplicates
    near = only_rejection(report)
    assert (near.source, near.category) == ("near.jpg", Reason.DUPLICATE)
    assert near.detail.startswith("looks the same as a.png (perceptual hashes ") and " bits apart, colours " in near.detail


def test_one_composition_in_other_colours_is_kept_and_not_flagged(home: Path, eyes) -> None:
    """Distinct works that share a structure: one seed under each eye colour, one drawing in six palettes."""
    works = [image for group in bench.class_variants(eyes, 3) + bench.palette_variants(3, 6, 128) for image in group]
    prints = [data.Fingerprint.of(image) for image in works]
    structure_twins = sum(a.same_structure(b) for a, b in itertools.combinations(prints, 2))
    assert structure_twins >= 20  # the luminance-only rule would have merged many of them
    report = ingest([(f"work{i}.png", media.png_bytes(image)) for i, image in enumerate(works)], resolution=128)
    assert len(report.kept) == len(works) == 3 * 8 + 3 * 6
    assert not report.near_duplicates and not report.rejected
    assert json.loads((report.dataset / "report.json").read_text())["near_duplicates"] == []


def test_colour_signature_sees_a_recoloured_region_and_not_brightness() -> None:
    image = np.asarray(art(1, (R, R)))
    recoloured = image.copy()
    recoloured[8:16, 8:16] = recoloured[8:16, 8:16, ::-1]  # one patch with red and blue swapped
    brighter = np.clip(image * 1.1, 0, 255).astype(np.uint8)
    base, patch, light = (data.Fingerprint.of(x) for x in (image, recoloured, brighter))
    assert base.colour_distance(light) <= data.NEAR_DUPLICATE_COLOUR < base.colour_distance(patch)
    assert base.resembles(light) and not base.resembles(patch)


def test_perceptual_hash_separates_pictures_not_encodings() -> None:
    image = np.asarray(art(1, (R, R)))
    brighter = np.clip(image.astype(int) + 20, 0, 255).astype(np.uint8)
    hashes = [data.perceptual_hash(x) for x in (image, brighter, np.asarray(art(2, (R, R))))]
    assert (hashes[0] ^ hashes[1]).bit_count() <= data.NEAR_DUPLICATE_BITS < (hashes[0] ^ hashes[2]).bit_count()


# -- archives -------------------------------------------------------------------------------------------


def new_files(root: Path, before: set[Path]) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} - before


def patch_first_entry(archive: bytes, local_offset: int, central_offset: int, value: bytes) -> bytes:
    """Overwrite one field of the first entry's local header and of its central directory record."""
    central = archive.index(b"PK\x01\x02")
    out = bytearray(archive)
    out[local_offset : local_offset + len(value)] = value
    out[central + central_offset : central + central_offset + len(value)] = value
    return bytes(out)


def test_archive_entries_are_read_from_nested_folders(home: Path, tmp_path: Path) -> None:
    archive = tmp_path / "art.zip"
    archive.write_bytes(zip_bytes({"set/": b"", "set/a.png": encode(art(1), "PNG"),
                                   "set/deeper/b.jpg": encode(art(2), "JPEG"),
                                   "__MACOSX/set/._a.png": b"\0\5\26\7 resource fork", "set/.DS_Store": b"\0" * 40}))
    # general-purpose flag bit 0: encrypted, which zipfile cannot read without a password
    locked = tmp_path / "locked.zip"
    locked.write_bytes(patch_first_entry(zip_bytes({"locked.png": encode(art(3), "PNG")}), 6, 8, b"\x01"))
    empty = tmp_path / "empty.zip"
    empty.write_bytes(zip_bytes({"folder/": b"", "__MACOSX/._x": b"\0"}))
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    report = data.ingest([archive, locked, empty], "zipped", R)
    assert [k.source for k in report.kept] == ["art.zip/set/a.png", "art.zip/set/deeper/b.jpg"]
    rejected = [(r.source, r.category, r.detail) for r in report.rejected]
    assert rejected == [("locked.zip/locked.png", Reason.UNSUPPORTED, "the entry is encrypted"),
                        ("empty.zip", Reason.EMPTY, "the archive holds no files")]
    assert all(p.is_relative_to(report.dataset.resolve()) for p in new_files(tmp_path, before))


def symlink_entry() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("link.png")
    info.create_system = 3  # unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def lying_size_zip() -> bytes:
    """One entry of 300 KB of zeros whose headers declare 100 bytes (uncompressed size field)."""
    return patch_first_entry(zip_bytes({"a.png": bytes(300_000)}), 22, 24, struct.pack("<I", 100))


@pytest.mark.parametrize(("entries", "category", "words"), [
    ({"../evil.png": encode(art(2), "PNG")}, Reason.UNSAFE_PATH, "'../evil.png' points outside"),
    ({"set/../../evil.png": encode(art(2), "PNG")}, Reason.UNSAFE_PATH, "points outside"),
    ({"/tmp/evil.png": encode(art(2), "PNG")}, Reason.UNSAFE_PATH, "points outside"),
    ({"C:\\evil.png": encode(art(2), "PNG")}, Reason.UNSAFE_PATH, "points outside"),
    ({"..\\evil.png": encode(art(2), "PNG")}, Reason.UNSAFE_PATH, "points outside"),
    ({"symlink": symlink_entry()}, Reason.SYMLINK, "'link.png' is a symbolic link"),
    ({"inner.zip": zip_bytes({"x.png": encode(art(2), "PNG")})}, Reason.NESTED_ARCHIVE, "inside the archive"),
    ({"disguised.png": zip_bytes({"x.png": encode(art(2), "PNG")})}, Reason.NESTED_ARCHIVE, "is itself a zip"),
    ({f"{i}.png": encode(art(i + 2), "PNG") for i in range(6)}, Reason.TOO_MANY_ENTRIES, "7 entries, over the 5 limit"),
    ({"bomb.png": bytes(2 * 2**20)}, Reason.TOO_LARGE, "declare 2 MiB uncompressed; the limit is 1 MiB per data set"),
    ("lying", Reason.CORRUPT_ARCHIVE, "Bad CRC-32"),  # zipfile stops at the declared size; the CRC tells the lie
    ("garbage", Reason.CORRUPT_ARCHIVE, "cannot read it as a zip archive"),
    ("damaged", Reason.CORRUPT_ARCHIVE, "Error -3 while decompressing"),
])
def test_hostile_archives_are_refused_whole_and_write_nothing(home: Path, tmp_path: Path, entries: dict | str,
                                                              category: Reason, words: str) -> None:
    if entries == "lying":
        content = lying_size_zip()
    elif entries == "garbage":
        content = b"PK\x03\x04" + b"\0" * 200
    elif entries == "damaged":  # the deflated bytes of an entry overwritten
        content = bytearray(zip_bytes({"ok.png": encode(art(1), "PNG")}))
        start = content.index(b"ok.png") + len("ok.png")
        content[start : start + 20] = b"\xff" * 20
    else:
        files = {k: v for k, v in entries.items() if isinstance(v, bytes)}
        content = zip_bytes({"ok.png": encode(art(1), "PNG"), **files},
                            **{k: v for k, v in entries.items() if isinstance(v, zipfile.ZipInfo)})
    archive = tmp_path / "upload" / "hostile.zip"
    archive.parent.mkdir()
    archive.write_bytes(content)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    report = data.ingest([tmp_path / "upload" / "hostile.zip", GOOD], "set", R, max_entries=5,
                         max_total_bytes=2**20)
    rejection = only_rejection(report)
    assert (rejection.source, rejection.category) == ("hostile.zip", category) and words in rejection.detail
    assert [k.source for k in report.kept] == ["good.png"]  # nothing of the archive, even its good entry
    assert all(p.is_relative_to(report.dataset.resolve()) for p in new_files(tmp_path, before))
    assert not any(p.name == "evil.png" for p in Path("/tmp").iterdir())


# -- byte limits ----------------------------------------------------------------------------------------


def peak_bytes_allocated(run) -> tuple[object, int]:
    """``run()``'s result and the most memory Python allocated meanwhile (a whole read would show here)."""
    tracemalloc.start()
    try:
        return run(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_over_limit_file_is_refused_by_its_size_without_being_read(home: Path, tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.write(encode(art(1), "PNG"))  # a real image's header...
        f.truncate(300 * 2**20)  # ...in a 300 MiB file that takes no disk space (sparse)
    report, peak = peak_bytes_allocated(lambda: data.ingest([huge, GOOD], "set", R))
    rejection = only_rejection(report)
    assert (rejection.source, rejection.reason) == ("huge.png", "too large: 300 MiB, the limit is 128 MiB per image")
    assert [k.source for k in report.kept] == ["good.png"]
    assert peak < 8 * 2**20  # neither the file nor the 128 MiB the limit allows was read
    assert data.MAX_IMAGE_BYTES == 128 * 2**20 < 300 * 2**20


def test_an_over_limit_archive_entry_is_refused_by_its_declared_size(home: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("ok.png", encode(art(1), "PNG"))
        with z.open("big.png", "w", force_zip64=True) as f:  # 300 MiB of zeros: 1.4 MB deflated
            for _ in range(300 // 4):
                f.write(bytes(4 * 2**20))
    archive = ("art.zip", buffer.getvalue())
    report, peak = peak_bytes_allocated(lambda: ingest([archive], resolution=R))
    rejection = only_rejection(report)
    assert (rejection.source, rejection.reason) == ("art.zip/big.png", "too large: 300 MiB, the limit is 128 MiB "
                                                                         "per image")
    assert [k.source for k in report.kept] == ["art.zip/ok.png"]  # the rest of the archive is still read
    assert peak < 8 * 2**20


def test_a_file_longer_than_its_size_says_is_cut_off_at_the_limit(home: Path) -> None:
    endless = Path("/dev/zero")  # its size says 0 bytes; reading it never ends
    if not endless.exists():
        pytest.skip("needs /dev/zero")
    report, peak = peak_bytes_allocated(lambda: data.ingest([endless, GOOD], "set", R, max_image_bytes=2**20))
    rejection = only_rejection(report)
    assert rejection.source == "zero" and rejection.reason == (
        "too large: more than 1 MiB when read, though its size said 0 bytes; the limit is 1 MiB per image")
    assert 2**20 < peak < 6 * 2**20  # read up to the limit, in chunks, and no further


def test_the_byte_budget_of_one_ingest_is_shared_by_all_inputs(home: Path) -> None:
    sources = [(f"art{s}.bmp", encode(art(s), "BMP")) for s in range(3)]  # 12 KiB each, to the byte
    size = len(sources[0][1])
    report = ingest(sources, max_total_bytes=2 * size + 1024)
    assert [k.source for k in report.kept] == ["art0.bmp", "art1.bmp"]
    rejection = only_rejection(report)
    assert (rejection.source, rejection.reason) == (
        "art2.bmp", f"too large: {size / 1024:.1f} KiB; only 1 KiB is left of the {(2 * size + 1024) / 1024:.1f} "
                    "KiB limit per data set")


# -- the data set on disk -------------------------------------------------------------------------------


def test_manifest_report_contact_sheet_and_loading(home: Path) -> None:
    sources = [(f"art{s}.png", encode(art(s, (80, 60)), "PNG")) for s in range(5)] + [("bad.png", b"oops")]
    report = ingest(sources, "mine")
    folder = home / "datasets" / "mine"
    assert report.dataset == folder == data.dataset_dir("mine")
    assert sorted(p.name for p in folder.iterdir()) == [*(f"{i:05d}.png" for i in range(5)), "contact.png",
                                                         "manifest.json", "report.json"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["resolution"] == R and manifest["fit"] == "crop" and manifest["background"] == "white"
    assert manifest["images"][2] == {"source": "art2.png", "sha256": hashlib.sha256(sources[2][1]).hexdigest(),
                                     "size": [80, 60], "file": "00002.png"}
    assert json.loads((folder / "report.json").read_text()) == {
        "rejected": [{"source": "bad.png", "reason": "not an image: not a PNG, JPEG, WebP, BMP, TIFF or GIF file"}],
        "near_duplicates": []}

    contact = np.asarray(Image.open(folder / "contact.png"))
    assert contact.shape == (2 * R + 2, 3 * R + 4, 3)  # 5 thumbnails: 3 columns, 2 rows, 2 px gaps
    assert np.array_equal(contact[R + 2 :, R + 2 : 2 * R + 2], output(report, 4))

    images = data.load_dataset("mine")
    assert images.shape == (5, 3, R, R) and images.dtype == torch.float32
    assert torch.equal(images[3], torch.tensor(output(report, 3)).permute(2, 0, 1).float() / 127.5 - 1)
    assert data.list_datasets() == ["mine"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def dataset_entries(home: Path) -> list[str]:
    """The data sets folder's entries, less the hidden versions behind each set's link (at most two a set)."""
    names = sorted(p.name for p in (home / "datasets").iterdir())
    versions = [n for n in names if re.fullmatch(r"\.mine\.v-[0-9a-f]{16}", n)]
    assert len(versions) <= 2
    return [n for n in names if n not in versions]


def test_an_existing_set_is_refused_before_any_input_is_read(home: Path, tmp_path: Path) -> None:
    first = ingest([(f"a{s}.png", encode(art(s), "PNG")) for s in range(20)], "mine")
    before = snapshot(first.dataset)
    with pytest.raises(data.DatasetExists, match="^data set 'mine' already exists ") as refused:
        ingest([tmp_path / "not-there.png"], "mine")  # reading it would fail: it is never read
    assert str(refused.value) == ("data set 'mine' already exists (20 images); to replace it, ingest again with "
                                  "--overwrite (overwrite=True), or choose another name")
    assert isinstance(refused.value, ValueError) and refused.value.images == 20
    assert snapshot(first.dataset) == before and len(data.load_dataset("mine")) == 20
    assert dataset_entries(home) == ["mine"]


def test_a_set_is_replaced_only_when_asked_and_by_a_complete_new_one(home: Path) -> None:
    first = ingest([(f"a{s}.png", encode(art(s), "PNG")) for s in range(3)], "mine")
    with pytest.raises(data.NoUsableImages, match="^no usable image: 2 inputs rejected; nothing was written$") \
            as failed:
        ingest([("bad.png", b"oops"), ("empty.png", b"")], "mine", overwrite=True)
    assert [r.category for r in failed.value.rejected] == [Reason.NOT_AN_IMAGE, Reason.EMPTY]
    assert len(data.load_dataset("mine")) == 3 and first.dataset.is_dir()
    ingest([("b.png", encode(art(9), "PNG"))], "mine", overwrite=True)
    assert len(data.load_dataset("mine")) == 1
    assert dataset_entries(home) == ["mine"]  # no temporary folders left


def test_nothing_is_written_without_a_usable_image(home: Path) -> None:
    with pytest.raises(data.NoUsableImages, match="no usable image: 1 input rejected"):
        ingest([("bad.png", b"oops")], "never")
    assert not (home / "datasets" / "never").exists() and data.list_datasets() == []


@pytest.mark.parametrize("name", ["", "../escape", "a b", "x/y", ".hidden", "a" * 97])
def test_bad_names_are_refused(home: Path, name: str) -> None:
    with pytest.raises(ValueError, match="is not a usable data set name: "):
        ingest([GOOD], name)
    assert not (home / "datasets").exists()


def test_a_data_set_name_may_be_as_long_as_any_studio_name(home: Path) -> None:
    longest = "a.b_c-" + "d" * (storage.MAX_NAME_LENGTH - 6)
    assert ingest([GOOD], longest).dataset == home / "datasets" / longest
    assert data.list_datasets() == [longest]
    with pytest.raises(ValueError, match=f"^a name of {storage.MAX_NAME_LENGTH + 1} characters is not a usable "
                                         "data set name: "):
        ingest([GOOD], longest + "d")


def test_missing_data_set_names_the_ingest_command(home: Path) -> None:
    with pytest.raises(FileNotFoundError, match="python -m studio ingest FILES... --name nope"):
        data.load_dataset("nope")


def test_folders_are_read_recursively(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "portfolio"
    (folder / "2024").mkdir(parents=True)
    (folder / "b.png").write_bytes(encode(art(1), "PNG"))
    (folder / "2024" / "a.jpg").write_bytes(encode(art(2), "JPEG"))
    (folder / ".DS_Store").write_bytes(b"\0" * 10)
    report = data.ingest([folder], "folder", R)
    assert [k.source for k in report.kept] == ["portfolio/2024/a.jpg", "portfolio/b.png"] and not report.rejected


# -- command line ---------------------------------------------------------------------------------------


def test_cli_ingest_prints_rejections_and_writes_the_json(home: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a.png").write_bytes(encode(art(1), "PNG"))
    (tmp_path / "b.zip").write_bytes(zip_bytes({"in/c.png": encode(art(2), "PNG"), "in/d.txt": b"hello"}))
    (tmp_path / "slip.zip").write_bytes(zip_bytes({"../evil.png": encode(art(3), "PNG")}))
    paths = [str(tmp_path / n) for n in ("a.png", "b.zip", "slip.zip")]
    assert main(["ingest", *paths, "--name", "cli", "--resolution", "32", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert f"kept 2 images, rejected 2; wrote {home / 'datasets' / 'cli'}" in out
    assert "b.zip/in/d.txt: not an image: " in out and "slip.zip: unsafe path: entry '../evil.png'" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report) == {"dataset", "kept", "rejected", "near_duplicates"}
    assert report["dataset"] == str(home / "datasets" / "cli") and report["near_duplicates"] == []
    assert [k["source"] for k in report["kept"]] == ["a.png", "b.zip/in/c.png"]
    assert report["rejected"] == [{"source": "b.zip/in/d.txt", "reason": report["rejected"][0]["reason"]},
                                  {"source": "slip.zip", "reason": report["rejected"][1]["reason"]}]
    assert report["rejected"][1]["reason"].startswith("unsafe path: ")
    assert data.load_dataset("cli").shape == (2, 3, 32, 32)


def test_cli_ingest_defaults_to_the_default_models_resolution(home: Path, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encode(art(1, (200, 150)), "PNG"))
    assert main(["ingest", str(tmp_path / "a.png"), "--name", "big", "--fit", "pad", "--background", "black"]) == 0
    manifest = json.loads((home / "datasets" / "big" / "manifest.json").read_text())
    assert (manifest["resolution"], manifest["fit"], manifest["background"]) == (128, "pad", "black")


def test_cli_ingest_without_a_usable_image_exits_2_and_writes_nothing(home: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"oops")
    result = subprocess.run([sys.executable, "-m", "studio", "ingest", str(tmp_path / "bad.png"), "--name", "x",
                             "--json", str(tmp_path / "r.json")], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "STUDIO_HOME": str(home)}, timeout=120)
    assert result.returncode == 2
    assert "bad.png: not an image" in result.stdout
    assert result.stderr == "error: no usable image: 1 input rejected; nothing was written\n"
    assert not (home / "datasets" / "x").exists() and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["missing.png", "--name", "x"], "no such file or folder: missing.png"),
    (["a.png", "--name", "no/slash"], "'no/slash' is not a usable data set name: "),
    (["a.png", "--name", "x", "--resolution", "3"], "resolution must be 8 to 2048 pixels"),
])
def test_cli_ingest_bad_arguments_exit_2(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.png").write_bytes(encode(art(1), "PNG"))
    assert main(["ingest", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (home / "datasets").exists()


def test_cli_ingest_refuses_an_existing_set_and_replaces_it_with_overwrite(home: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    for s in range(3):
        (tmp_path / f"a{s}.png").write_bytes(encode(art(s), "PNG"))
    (tmp_path / "near.jpg").write_bytes(brighter_jpeg(art(0)))

    def ingest_cli(*names: str) -> tuple[int, str, str]:
        code = main(["ingest", *(str(tmp_path / n) for n in names if not n.startswith("--")), "--name", "x",
                     "--resolution", "32", *(n for n in names if n.startswith("--"))])
        out, err = capsys.readouterr()
        return code, out, err

    assert ingest_cli("a0.png", "a1.png")[0] == 0
    before = snapshot(home / "datasets" / "x")
    assert ingest_cli("a2.png") == (2, "", "error: data set 'x' already exists (2 images); to replace it, ingest "
                                           "again with --overwrite (overwrite=True), or choose another name\n")
    assert snapshot(home / "datasets" / "x") == before

    code, out, _ = ingest_cli("a2.png", "near.jpg", "a0.png", "--overwrite")
    assert code == 0 and out.startswith(f"kept 3 images, rejected 0; wrote {home / 'datasets' / 'x'}\n")
    assert "  near duplicate kept: a0.png looks the same as near.jpg (perceptual hashes " in out
    manifest = json.loads((home / "datasets" / "x" / "manifest.json").read_text())
    assert [e["source"] for e in manifest["images"]] == ["a2.png", "near.jpg", "a0.png"]

    code, out, _ = ingest_cli("a0.png", "near.jpg", "--overwrite", "--drop-near-duplicates")
    assert code == 0 and "  rejected near.jpg: duplicate: looks the same as a0.png (perceptual hashes " in out
    assert len(data.load_dataset("x")) == 1
