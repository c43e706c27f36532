"""Recipes: the full state of one image as JSON, enough to regenerate it pixel for pixel.

Every PNG the studio writes carries its recipe in a PNG text chunk, so an image file is also the
way back to the state that made it.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from studio import latent
from studio.bending import MAX_BENDS, Bend
from studio.directions import METHODS
from studio.sampling import Request
from studio.media import DRAWN_PNG, to_pil
from studio.storage import MAX_NAME_LENGTH, atomic_write_bytes
from studio.zoo import LoadedModel

PNG_KEY = "gan-studio-recipe"
FORMAT = "gan-studio-recipe/1"
# A recipe is about 1 KB; one with every class and slider set, under long names, stays far below
# these. They are checked before parsing, so no document can exhaust memory or the parser's stack.
MAX_RECIPE_BYTES = 64 * 1024
MAX_NESTING = 8  # a recipe nests 2 deep: the document, then its classes and edits
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
MAX_STYLE_LAYERS = 64  # a 1024 px StyleGAN2 has 18 style inputs; 64 leaves room without being unbounded
# A found latent's values: a 1024 px StyleGAN2's W+ (18 x 512) fits, and its base64 (48 KB) keeps the
# recipe under MAX_RECIPE_BYTES.
MAX_LATENT_VALUES = 18 * 512
_SHA256 = re.compile(r"(?:[0-9a-f]{64})?")  # empty: not yet drawn, so no weights to check


class RecipeError(ValueError):
    """A recipe that cannot be read or used; the message says why."""


@dataclass(frozen=True)
class Latent:
    """A latent found by projection, kept exactly: little-endian float32 values, base64, and their shape.

    Attributes:
        shape: z ``[z_dim]``, w ``[w_dim]`` or W+ ``[L, w_dim]``.
        float32: The values' bytes (little-endian float32), base64-encoded.
    """

    shape: tuple[int, ...]
    float32: str

    def __post_init__(self) -> None:
        """Refuse a shape that is not 1 or 2 positive sizes, values that do not fill it, or any NaN or infinity.

        Raises:
            RecipeError: Why the latent cannot be used.
        """
        if (not isinstance(self.shape, tuple) or not 1 <= len(self.shape) <= 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in self.shape)):
            raise RecipeError(f"a latent's shape is one or two positive sizes, not {_excerpt(self.shape)}")
        count = math.prod(self.shape)
        if count > MAX_LATENT_VALUES:
            raise RecipeError(f"a latent holds at most {MAX_LATENT_VALUES} values, not {count}")
        if not isinstance(self.float32, str) or len(self.float32) != 4 * ((4 * count + 2) // 3):
            raise RecipeError(f"the latent's values do not fill its shape {list(self.shape)}")
        try:
            values = np.frombuffer(base64.b64decode(self.float32, validate=True), dtype="<f4")
        except (binascii.Error, ValueError):
            raise RecipeError("the latent's values are not base64 float32 bytes") from None
        if len(values) != count:
            raise RecipeError(f"the latent's values do not fill its shape {list(self.shape)}")
        if not np.isfinite(values).all():
            raise RecipeError("the latent holds NaN or infinity")

    @classmethod
    def of(cls, tensor: torch.Tensor) -> Latent:
        """The exact float32 values of ``tensor``."""
        values = tensor.detach().float().cpu().contiguous().numpy().astype("<f4")
        return cls(tuple(int(v) for v in values.shape), base64.b64encode(values.tobytes()).decode("ascii"))

    def tensor(self) -> torch.Tensor:
        """The values as a float32 tensor of ``shape``, on the CPU."""
        values = np.frombuffer(base64.b64decode(self.float32), dtype="<f4").astype(np.float32)
        return torch.from_numpy(values.reshape(self.shape).copy())

    def to_dict(self) -> dict[str, Any]:
        """The latent as JSON-ready values."""
        return {"shape": list(self.shape), "float32": self.float32}

    @classmethod
    def from_dict(cls, d: object) -> Latent:
        """The latent from ``to_dict``'s values, checked."""
        if not isinstance(d, dict) or not isinstance(d.get("shape"), list) or set(d) != {"shape", "float32"}:
            raise RecipeError("'latent' must be {\"shape\": [...], \"float32\": \"...\"}")
        return cls(tuple(d["shape"]), d["float32"])


@dataclass(frozen=True)
class Recipe:
    """The state of one image.

    Attributes:
        model: Model name in the zoo.
        weights_sha256: Hash of the model's weights file; regenerating refuses other weights.
        seed: The latent's seed.
        classes: Class weights ``{name: weight}`` as the artist set them (normalised when drawn, the
            same way every time); empty for an unconditional model or the uniform blend.
        truncation: psi.
        directions: Directions method the edits refer to ("sefa" or "pca").
        edits: Slider values ``{direction index: value}`` in units of the latent's std.
        edit_layers: The style layers ``(first, last)`` the sliders move; None = all. Style families only,
            as are the next three (a DCGAN recipe leaves them None, and its JSON without them).
        mix_seed: Style mixing: the seed whose styles replace layers ``mix_layers``; None = no mixing.
        mix_layers: The style layers ``(first, last)`` taken from ``mix_seed``.
        noise_seed: The seed of the per-layer noise; None = the model's constant noise.
        bends: Network bends, applied in order (``bending.Bend``); left out of the JSON when there are none.
        latent: A latent found by projection, drawn instead of the seed's (left out of the JSON when None).
        tuned: For a fine-tuned model, its weights blended from its base model's (0) to its own (1), the
            base named by its lineage; None = its own weights (and left out of the JSON).
        precision: The reduced precision the image was drawn in ("bf16" or "fp16", an interactive view's
            fast draw); None = exact fp32 (and left out of the JSON). Replays draw in fp32 unless asked.
    """

    model: str
    weights_sha256: str
    seed: int
    classes: dict[str, float] = field(default_factory=dict)
    truncation: float = 1.0
    directions: str = "sefa"
    edits: dict[int, float] = field(default_factory=dict)
    edit_layers: tuple[int, int] | None = None
    mix_seed: int | None = None
    mix_layers: tuple[int, int] | None = None
    noise_seed: int | None = None
    bends: tuple[Bend, ...] = ()
    latent: Latent | None = None
    tuned: float | None = None
    precision: str | None = None

    def __post_init__(self) -> None:
        """Refuse, in words, any state no image can be drawn from: every number finite and in range.

        Raises:
            RecipeError: The first field that is out of range or of the wrong kind.
        """
        if not isinstance(self.model, str) or not 0 < len(self.model) <= MAX_NAME_LENGTH:
            raise RecipeError(f"a model name is 1 to {MAX_NAME_LENGTH} characters, not {_excerpt(self.model)}")
        if not isinstance(self.weights_sha256, str) or not _SHA256.fullmatch(self.weights_sha256):
            raise RecipeError(f"weights_sha256 must be 64 hex digits (or empty), not {_excerpt(self.weights_sha256)}")
        if self.directions not in METHODS:
            raise RecipeError(f"unknown directions {_excerpt(self.directions)}; choose one of {', '.join(METHODS)}")
        if not isinstance(self.classes, dict) or not isinstance(self.edits, dict):
            raise RecipeError("classes and edits must be dictionaries")
        try:
            latent.check_seed(self.seed)
            if not isinstance(self.seed, int):  # 7.0 would go into the JSON as 7.0, which from_json refuses
                raise ValueError(f"seed {self.seed!r} must be an int, such as 7")
            latent.check_truncation(self.truncation)
            latent.check_class_weights(self.classes)
            latent.check_edits(self.edits.items())
            for seed in (self.mix_seed, self.noise_seed):
                if seed is not None:
                    _check_int_seed(seed)
            for layers in (self.edit_layers, self.mix_layers):
                _check_layer_pair(layers)
            if not isinstance(self.bends, tuple) or not all(isinstance(b, Bend) for b in self.bends):
                raise ValueError("bends must be a tuple of bends")
            if len(self.bends) > MAX_BENDS:
                raise ValueError(f"at most {MAX_BENDS} bends at once, not {len(self.bends)}")
            if self.latent is not None and not isinstance(self.latent, Latent):
                raise ValueError("latent must be a Latent")
            if self.tuned is not None:
                latent.check_number(self.tuned, "the base <-> fine-tuned blend", 0.0, 1.0)
            if self.precision not in (None, *REDUCED):
                raise ValueError(f"precision is one of {', '.join(REDUCED)} or left out (fp32), not "
                                 f"{_excerpt(self.precision)}")
            if (self.mix_seed is None) != (self.mix_layers is None):
                raise ValueError("style mixing needs both a seed and its layers (mix_seed, mix_layers)")
        except ValueError as e:
            raise RecipeError(str(e)) from None

    def to_json(self) -> str:
        """The recipe as a JSON document (strict JSON: never NaN or infinity); style fields left None are left out."""
        d = {k: v for k, v in asdict(self).items()
             if (v is not None or k not in OPTIONAL_FIELDS) and k not in ("bends", "latent")}
        d["edits"] = {str(k): v for k, v in sorted(self.edits.items())}
        if self.bends:
            d["bends"] = [b.to_dict() for b in self.bends]
        if self.latent is not None:
            d["latent"] = self.latent.to_dict()
        return json.dumps({"format": FORMAT, **d}, indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """Parse a JSON recipe, checking its size and nesting before parsing, then every field."""
        if not isinstance(text, str):
            raise RecipeError(f"not a recipe: expected JSON text, not {type(text).__name__}")
        _check_size(len(text) if len(text) > MAX_RECIPE_BYTES else len(text.encode("utf-8", "replace")))
        if _too_deep(text):
            raise RecipeError(f"not a recipe: it nests deeper than {MAX_NESTING} levels (a recipe nests 2)")
        try:
            d = json.loads(text, parse_constant=refuse_constant)
        except ValueError as e:  # JSONDecodeError, and integers too long to convert
            raise RecipeError(f"not a recipe: the text is not JSON ({e})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise RecipeError(f"not a recipe: expected a JSON object with format {FORMAT!r}")
        try:
            return cls(
                model=_typed(d, "model", str),
                weights_sha256=_typed(d, "weights_sha256", str),
                seed=_typed(d, "seed", int),
                classes=dict(_typed(d, "classes", dict)),
                truncation=_typed(d, "truncation", (int, float)),
                directions=_typed(d, "directions", str),
                edits={int(k): v for k, v in _typed(d, "edits", dict).items()},
                edit_layers=_layer_pair(d, "edit_layers"),
                mix_seed=_typed(d, "mix_seed", int) if d.get("mix_seed") is not None else None,
                mix_layers=_layer_pair(d, "mix_layers"),
                noise_seed=_typed(d, "noise_seed", int) if d.get("noise_seed") is not None else None,
                bends=tuple(Bend.from_dict(b) for b in _typed(d, "bends", list)) if "bends" in d else (),
                latent=Latent.from_dict(d["latent"]) if d.get("latent") is not None else None,
                tuned=_typed(d, "tuned", (int, float)) if d.get("tuned") is not None else None,
                precision=_typed(d, "precision", str) if d.get("precision") is not None else None,
            )
        except (ValueError, TypeError) as e:
            raise RecipeError(f"invalid recipe: {e}") from None


STYLE_FIELDS = ("edit_layers", "mix_seed", "mix_layers", "noise_seed")
REDUCED = ("bf16", "fp16")  # the precisions a recipe records; fp32 is recorded by leaving the field out
OPTIONAL_FIELDS = (*STYLE_FIELDS, "tuned", "precision")  # left out of the JSON when None, so older recipes read unchanged


def _check_int_seed(seed: object) -> None:
    latent.check_seed(seed)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed {seed!r} must be an int, such as 7")


def _check_layer_pair(layers: object) -> None:
    """Refuse anything but None or (first, last) whole numbers with 0 <= first <= last < 64."""
    if layers is None:
        return
    if (not isinstance(layers, tuple) or len(layers) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in layers)
            or not 0 <= layers[0] <= layers[1] < MAX_STYLE_LAYERS):
        raise ValueError(f"style layers are (first, last) with 0 <= first <= last < {MAX_STYLE_LAYERS}, "
                         f"not {_excerpt(layers)}")


def _layer_pair(d: Mapping[str, Any], key: str) -> tuple[int, int] | None:
    """An optional ``[first, last]`` from the JSON as a tuple (checked by the recipe)."""
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise RecipeError(f"{key!r} must be [first, last]")
    return tuple(value)


def _excerpt(value: object) -> str:
    """``value``'s repr, cut short: an error message must stay one readable line."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def _check_size(size: int) -> None:
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(f"not a recipe: {size} bytes is over the {MAX_RECIPE_BYTES // 1024} KB a recipe may take")


def _too_deep(text: str) -> bool:
    """Whether ``text``'s brackets nest deeper than ``MAX_NESTING`` outside strings, found in one pass.

    A character-by-character scan: a regular expression for strings would rescan an unclosed one
    from each of its quotes, which takes quadratic time.
    """
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def refuse_constant(name: str) -> float:
    """``json.loads``'s ``parse_constant``: NaN and infinity are no numbers a recipe may hold."""
    raise ValueError(f"{name} is not a number a recipe may hold")


def _typed(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise RecipeError(f"missing {key!r}")
    value = d[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecipeError(f"{key!r} has the wrong type")
    return value


def png_with_recipe(image: Image.Image, recipe: Recipe) -> bytes:
    """Encode ``image`` as PNG with ``recipe`` in an iTXt chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(PNG_KEY, recipe.to_json())
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, **DRAWN_PNG)
    return buf.getvalue()


def read_recipe(source: Path | bytes) -> Recipe:
    """Read a recipe from a PNG the studio saved or a JSON recipe, as a file or its bytes.

    A PNG's chunks are walked without decoding its pixels, and only the recipe chunk is read, so
    a large or hostile image costs neither time nor memory.

    Raises:
        RecipeError: The source holds no readable recipe.
    """
    try:
        f: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
        with f:
            head = f.read(len(PNG_SIGNATURE))
            if head == PNG_SIGNATURE:
                return Recipe.from_json(_png_recipe_text(f))
            data = head + f.read(MAX_RECIPE_BYTES + 1 - len(head))
    except OSError as e:
        raise RecipeError(f"cannot read {source}: {e.strerror or e}") from None
    _check_size(len(data))
    try:
        return Recipe.from_json(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecipeError("not a recipe: neither a PNG saved by the studio nor JSON") from None


def _png_recipe_text(f: BinaryIO) -> str:
    """The recipe text in a PNG's chunks, ``f`` positioned just after the PNG signature."""
    first = True
    while True:
        header = f.read(8)
        if len(header) < 8:
            raise RecipeError("the PNG could not be read (it ends before its last chunk)")
        length, kind = struct.unpack(">I4s", header)
        if first and kind != b"IHDR":
            raise RecipeError("the PNG could not be read (it does not start with an image header)")
        first = False
        if kind == b"IEND":
            raise RecipeError("this PNG carries no GAN Studio recipe (only images saved by the studio do)")
        if kind in TEXT_CHUNKS:
            prefix = f.read(min(length, len(PNG_KEY) + 1))
            if prefix == PNG_KEY.encode() + b"\0":
                if length > MAX_RECIPE_BYTES + 64:  # room for the chunk's own fields
                    raise RecipeError(f"the PNG's recipe takes {length} bytes, over the "
                                      f"{MAX_RECIPE_BYTES // 1024} KB a recipe may take")
                body = prefix + f.read(length - len(prefix))
                if f.read(4) != struct.pack(">I", zlib.crc32(kind + body)):
                    raise RecipeError("the PNG could not be read (its recipe chunk is damaged)")
                return _chunk_text(kind, body[len(prefix):])
            f.seek(length - len(prefix) + 4, io.SEEK_CUR)  # the rest of the chunk, and its checksum
        else:
            f.seek(length + 4, io.SEEK_CUR)


def _chunk_text(kind: bytes, rest: bytes) -> str:
    """The text of a PNG text chunk of type ``kind``, given what follows its keyword."""
    if kind == b"tEXt":
        return rest.decode("latin-1")
    if kind == b"zTXt":
        return _inflate(rest[1:]).decode("latin-1")
    parts = rest[2:].split(b"\0", 2)  # iTXt: compression flag and method, then language, translated key, text
    if len(rest) < 2 or len(parts) < 3:
        raise RecipeError("the PNG could not be read (its recipe chunk is malformed)")
    try:
        return (_inflate(parts[2]) if rest[0] else parts[2]).decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError("the PNG could not be read (its recipe is not UTF-8 text)") from None


def _inflate(data: bytes) -> bytes:
    """Decompress a text chunk, refusing one that would inflate past a recipe's size."""
    try:
        text = zlib.decompressobj().decompress(data, MAX_RECIPE_BYTES + 1)
    except zlib.error:
        raise RecipeError("the PNG could not be read (its recipe chunk is damaged)") from None
    _check_size(len(text))
    return text


def request_for(recipe: Recipe, precision: str = "exact") -> Request:
    """The request that draws ``recipe``'s image, in fp32 ("exact") or the engine's fast precision ("fast").

    The precision the recipe records is not replayed: a replay is exact unless ``precision`` says otherwise.
    """
    mix = None if recipe.mix_seed is None else (recipe.mix_seed, *recipe.mix_layers)
    return Request(recipe.model, (recipe.seed,), dict(recipe.classes) or None, recipe.truncation,
                   tuple(sorted(recipe.edits.items())), recipe.directions, recipe.edit_layers, mix, recipe.noise_seed,
                   bends=recipe.bends, start=None if recipe.latent is None else recipe.latent.tensor(),
                   tuned=recipe.tuned, precision=precision)


def stamped(recipe: Recipe, drawn_in: str) -> Recipe:
    """``recipe`` recording the precision its image was drawn in: "fp32" leaves the field out."""
    return replace(recipe, precision=None if drawn_in == "fp32" else drawn_in)


def check_weights(recipe: Recipe, model: LoadedModel) -> None:
    """Raise RecipeError unless ``model`` has the weights ``recipe`` was made with."""
    if model.weights_sha256 != recipe.weights_sha256:
        raise RecipeError(f"this recipe was made with other weights of {recipe.model!r} "
                          f"({recipe.weights_sha256[:12]}, here {model.weights_sha256[:12]}), so it cannot "
                          "reproduce the image")


def save_with_recipe(path: Path, image: np.ndarray, recipe: Recipe) -> None:
    """Write one ``[H, W, 3]`` uint8 image as a PNG carrying ``recipe``, atomically."""
    atomic_write_bytes(Path(path), png_with_recipe(to_pil(image), recipe))
