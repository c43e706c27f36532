"""Recipes: the full state of one image as JSON, enough to regenerate it pixel for pixel.

Every PNG the studio writes carries its recipe in a PNG text chunk, so an image file is also the
way back to the state that made it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from studio.engine import Request
from studio.latent import check_seed
from studio.media import to_pil
from studio.storage import atomic_write_bytes
from studio.zoo import LoadedModel

PNG_KEY = "gan-studio-recipe"
FORMAT = "gan-studio-recipe/1"


class RecipeError(ValueError):
    """A recipe that cannot be read or used; the message says why."""


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
    """

    model: str
    weights_sha256: str
    seed: int
    classes: dict[str, float] = field(default_factory=dict)
    truncation: float = 1.0
    directions: str = "sefa"
    edits: dict[int, float] = field(default_factory=dict)

    def to_json(self) -> str:
        """The recipe as a JSON document."""
        d = asdict(self)
        d["edits"] = {str(k): v for k, v in sorted(self.edits.items())}
        return json.dumps({"format": FORMAT, **d}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """Parse a JSON recipe, checking every field's type."""
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, TypeError) as e:
            raise RecipeError(f"not a recipe: the text is not JSON ({e})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise RecipeError(f"not a recipe: expected a JSON object with format {FORMAT!r}")
        try:
            return cls(
                model=_typed(d, "model", str),
                weights_sha256=_typed(d, "weights_sha256", str),
                seed=check_seed(_typed(d, "seed", int)),
                classes={str(k): float(v) for k, v in _typed(d, "classes", dict).items()},
                truncation=float(_typed(d, "truncation", (int, float))),
                directions=_typed(d, "directions", str),
                edits={int(k): float(v) for k, v in _typed(d, "edits", dict).items()},
            )
        except (ValueError, TypeError) as e:
            raise RecipeError(f"invalid recipe: {e}") from None


def _typed(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise RecipeError(f"invalid recipe: missing {key!r}")
    value = d[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecipeError(f"invalid recipe: {key!r} has the wrong type")
    return value


def png_with_recipe(image: Image.Image, recipe: Recipe) -> bytes:
    """Encode ``image`` as PNG with ``recipe`` in an iTXt chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(PNG_KEY, recipe.to_json())
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_recipe(source: Path | bytes) -> Recipe:
    """Read a recipe from a PNG the studio saved or a JSON recipe, as a file or its bytes.

    Raises:
        RecipeError: The source holds no readable recipe.
    """
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise RecipeError(f"cannot read {source}: {e.strerror}") from None
    if data.startswith(b"\x89PNG"):
        try:
            with Image.open(io.BytesIO(data)) as img:
                text = img.text.get(PNG_KEY)  # type: ignore[attr-defined]
        except Exception as e:  # Pillow raises many types for damaged files
            raise RecipeError(f"the PNG could not be read ({e})") from None
        if text is None:
            raise RecipeError("this PNG carries no GAN Studio recipe (only images saved by the studio do)")
        return Recipe.from_json(text)
    try:
        return Recipe.from_json(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecipeError("not a recipe: neither a PNG saved by the studio nor JSON") from None


def request_for(recipe: Recipe) -> Request:
    """The engine request that draws ``recipe``'s image."""
    return Request(recipe.model, (recipe.seed,), dict(recipe.classes) or None, recipe.truncation,
                   tuple(sorted(recipe.edits.items())), recipe.directions)


def check_weights(recipe: Recipe, model: LoadedModel) -> None:
    """Raise RecipeError unless ``model`` has the weights ``recipe`` was made with."""
    if model.weights_sha256 != recipe.weights_sha256:
        raise RecipeError(f"this recipe was made with other weights of {recipe.model!r} "
                          f"({recipe.weights_sha256[:12]}, here {model.weights_sha256[:12]}), so it cannot "
                          "reproduce the image")


def save_png(path: Path, image: np.ndarray, recipe: Recipe) -> None:
    """Write one ``[H, W, 3]`` uint8 image as a PNG carrying ``recipe``, atomically."""
    atomic_write_bytes(Path(path), png_with_recipe(to_pil(image), recipe))
