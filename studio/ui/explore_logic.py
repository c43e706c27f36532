"""What the Explore tab does, without Gradio: control values -> recipe -> images, context, history, keyframes.

Every function takes the shared engine explicitly and raises ``ValueError`` (or the engine's and the
zoo's own errors) with a message for the artist; the tab turns those into ``gr.Error``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio import directions, remix, zoo
from studio.bending import parse_lines, spec
from studio.animation import MAX_KEYFRAMES
from studio.latent import MAX_SEED, check_seed
from studio.media import grid
from studio.recipe import Latent, Recipe, RecipeError, check_weights, read_recipe, request_for, stamped
from studio.sampling import Request, strip_inputs

if TYPE_CHECKING:
    from studio.engine import Engine
    from studio.models.folder import ModelConfig
    from studio.ui.files import ImageFiles

# Style mixing's layer bands, as the StyleGAN paper names them: coarse (4²-8²: pose, shape), middle
# (16²-32²: features), fine (64² and up: colour, texture). None: up to the model's last layer.
STYLE_BANDS: dict[str, tuple[int, int | None]] = {"coarse": (0, 3), "middle": (4, 7), "fine": (8, None)}
VARIATIONS = 8
STRIP_VALUES = (-3.0, 0.0, 3.0)
HISTORY = 50
EMPTY_HISTORY: dict[str, Any] = {"items": [], "index": -1}


def card_markdown(name: str, config: ModelConfig) -> str:
    """Markdown describing model ``name``: resolution, classes, licence, author, source, lineage."""
    classes = f"{len(config.class_names)} classes" if config.class_names else "unconditional"
    licence = config.license.upper() if config.license else "unknown licence"
    parts = [f"**{config.title or name}**", f"{config.resolution}×{config.resolution}", classes, f"licence {licence}"]
    if config.author:
        parts.append(f"by {config.author}")
    lines = [" · ".join(parts)]
    if config.description:
        lines.append(config.description)
    if config.source:
        lines.append(f"Source: {config.source}")
    lineage = config.lineage
    if lineage:
        facts = [f"from **{lineage.get('base_model', '?')}**", f"data set `{lineage.get('dataset', '?')}`"]
        if "dataset_images" in lineage:
            facts.append(f"{lineage['dataset_images']} images")
        facts.append(f"{lineage.get('steps', '?')} steps")
        if isinstance(lineage.get("swd"), (int, float)):
            facts.append(f"SWD {lineage['swd']:.1f}")
        lines.append("Fine-tuned " + " · ".join(facts))
    return "\n\n".join(lines)


def band_layers(band: str, count: int) -> tuple[int, int]:
    """The style layers (first, last) of ``STYLE_BANDS`` entry ``band`` in a model with ``count`` style layers."""
    if band not in STYLE_BANDS:
        raise ValueError(f"unknown layer band {band!r}; choose one of {', '.join(STYLE_BANDS)}")
    first, last = STYLE_BANDS[band]
    last = count - 1 if last is None else min(last, count - 1)
    return min(first, last), last


def recipe_from_controls(config_of: Callable[[str], ModelConfig], model: Any, seed: Any, blend_on: bool,
                         class_name: str | None, blend: tuple[float, ...], truncation: float, method: str,
                         sliders: tuple[float, ...], style: tuple[Any, ...] = (None, 0, 0, None, 0, 0),
                         bends: str = "", tuned: Any = 1.0) -> Recipe:
    """The recipe the Explore controls describe (their values may come from any API caller).

    ``config_of(name)`` gives a model's config (the engine's cached one in the studio). ``style``: the
    StyleGAN controls (mix seed, its first and last layer, noise seed, the sliders' first and last layer);
    blank seeds mean no mixing and the constant noise. A model without style layers ignores them. ``bends``:
    network bends, one per line as ``bending.parse`` reads them. ``tuned``: the "base <-> fine-tuned" slider,
    from the base model's weights (0) to this model's own (1, or None); ignored for a model with no base here.

    Raises:
        ValueError: No seed, an all-zero blend, a number that is not finite or out of range.
        zoo.ModelUnavailable: An unknown model.
    """
    if not isinstance(model, str):
        raise ValueError("Pick a model.")
    names = config_of(model).class_names
    if seed is None:
        raise ValueError(f"Enter a seed: a whole number from 0 to {MAX_SEED}.")
    if not names:
        classes = {}
    elif blend_on:
        classes = {n: w for n, w in zip(names, blend) if w}
        if not classes:
            raise ValueError("Give at least one class a weight above zero to blend.")
    else:
        classes = {class_name: 1.0} if class_name else {}
    edits = {i: v for i, v in enumerate(sliders) if v}
    blended = tuned is not None and tuned != 1.0 and tuned_base(config_of(model)) is not None
    made = Recipe(model, "", check_seed(seed), classes, truncation, method, edits, bends=parse_lines(bends),
                  tuned=tuned if blended else None)
    count = config_of(model).num_style_layers
    return replace(made, **_style_fields(style, count)) if count else made


def tuned_base(config: ModelConfig) -> str | None:
    """The base model a model with ``config`` was fine-tuned from, if this studio has it (else None)."""
    base = remix.base_of(config)
    return base if base is not None and base in zoo.model_names() else None


def found_of(recipe: Recipe) -> str:
    """The hidden "found latent" value that goes with ``recipe``: its model, seed and projected latent, or ""."""
    if recipe.latent is None:
        return ""
    return json.dumps({"model": recipe.model, "seed": recipe.seed, "latent": recipe.latent.to_dict()})


def with_found(recipe: Recipe, found: str | None) -> Recipe:
    """``recipe`` with the projected latent of ``found`` (from ``found_of``) when it was found for the same model
    and seed: picking another seed or model leaves the projection behind, coming back to it brings it back.

    Raises:
        RecipeError: ``found`` is not what ``found_of`` writes.
    """
    if not found:
        return recipe
    try:
        d = json.loads(found)
    except ValueError:
        raise RecipeError("the found latent is not JSON") from None
    if not isinstance(d, dict) or d.get("model") != recipe.model or d.get("seed") != recipe.seed:
        return recipe
    return replace(recipe, latent=Latent.from_dict(d.get("latent")))


def added_bend(text: str, op: str, layer: Any, value: Any, channels: str) -> str:
    """The bends ``text`` with one more line: ``op`` at ``value`` on ``layer``'s ``channels`` ("" = all).

    Raises:
        ValueError: A bend that cannot be, said in words.
    """
    if layer is None or value is None:
        raise ValueError("Give the bend a layer and a value.")
    where = f"@{channels.strip()}" if channels and channels.strip() else ""
    line = f"{int(layer)}:{op}={float(value):g}{where}"
    bends = parse_lines(f"{text or ''}\n{line}")
    return "\n".join(spec(b) for b in bends)


def _style_fields(style: tuple[Any, ...], count: int) -> dict[str, Any]:
    """The recipe's style fields from the style controls' values (see ``recipe_from_controls``)."""
    mix_seed, mix_first, mix_last, noise_seed, edit_first, edit_last = style
    fields: dict[str, Any] = {}
    if mix_seed is not None:
        fields.update(mix_seed=check_seed(mix_seed), mix_layers=_layer_range(mix_first, mix_last, count, "mixing"))
    if noise_seed is not None:
        fields["noise_seed"] = check_seed(noise_seed)
    edit_layers = _layer_range(edit_first, edit_last, count, "slider")
    if edit_layers != (0, count - 1):  # all layers is the default, left out of the recipe
        fields["edit_layers"] = edit_layers
    return fields


def _layer_range(first: Any, last: Any, count: int, what: str) -> tuple[int, int]:
    try:
        layers = int(first), int(last)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{what} layers must be whole numbers from 0 to {count - 1}") from None
    if not 0 <= min(layers) <= max(layers) < count:
        raise ValueError(f"{what} layers must be whole numbers from 0 to {count - 1}, not {first}-{last}")
    return min(layers), max(layers)


def draw(engine: Engine, files: ImageFiles, recipe_json: str) -> tuple[str, str]:
    """Draw a recipe: the PNG file (recipe inside, weights' hash filled in) and that recipe's JSON.

    Raises:
        RecipeError: The JSON is not a recipe, or it names other weights than the model's.
    """
    recipe = Recipe.from_json(recipe_json)
    model = engine.model(recipe.model, recipe.tuned)  # a blend is made here, on this thread, not the engine's
    if recipe.weights_sha256:
        check_weights(recipe, model)
    recipe = replace(recipe, weights_sha256=model.weights_sha256)
    image = engine.generate(request_for(recipe, "fast"))[0]
    return files.save(image, stamped(recipe, engine.precision_for(recipe.model).name)), recipe.to_json()


def variation_seeds(seed: int) -> tuple[int, ...]:
    """The neighbouring seeds shown beside the current image."""
    return tuple((seed + 1 + i) % (MAX_SEED + 1) for i in range(VARIATIONS))


def picked_seed(seed: float | None, index: int) -> int:
    """The seed of variation ``index`` of ``seed``."""
    return variation_seeds(int(seed or 0))[index]


def variations(engine: Engine, files: ImageFiles, recipe: Recipe) -> list[tuple[str, str]]:
    """The neighbouring seeds' images (PNGs with their own recipes), captioned, drawn with the recipe's other settings.

    A projected image's found latent is left out: its neighbours are the seeds' own images.
    """
    recipe = replace(recipe, latent=None)
    seeds = variation_seeds(recipe.seed)
    images = engine.generate(replace(request_for(recipe, "fast"), seeds=seeds))
    recipe = stamped(recipe, engine.precision_for(recipe.model).name)
    return [(files.save(image, replace(recipe, seed=s)), f"seed {s}") for s, image in zip(seeds, images)]


def strip_views(engine: Engine, files: ImageFiles, recipe: Recipe, k: int) -> list[str]:
    """The first ``k`` sliders' strips (PNG files): the image with that slider at each of ``STRIP_VALUES``, the
    others as set."""
    model = engine.model(recipe.model, recipe.tuned)
    request = request_for(recipe, "fast")
    inputs = strip_inputs(model, request, k, STRIP_VALUES)
    images = engine.generate(Request(recipe.model, z=inputs.latents, c=inputs.c, noise_seed=request.noise_seed,
                                     bends=request.bends, tuned=recipe.tuned, precision="fast"))
    n = len(STRIP_VALUES)
    return [files.picture(grid(images[i * n : (i + 1) * n], cols=n, pad=1)) for i in range(len(images) // n)]


def pushed(history: dict[str, Any], recipe_json: str) -> dict[str, Any]:
    """``history`` with ``recipe_json`` as its newest state (forward states dropped), at most ``HISTORY`` long."""
    items, index = history["items"], history["index"]
    if index >= 0 and items[index] == recipe_json:
        return history  # a state restored from history, or nothing changed
    items = [*items[: index + 1], recipe_json][-HISTORY:]
    return {"items": items, "index": len(items) - 1}


def history_step(history: dict[str, Any], delta: int) -> tuple[dict[str, Any], Recipe]:
    """Move ``delta`` states through ``history``: the new history and the recipe to show."""
    index = history["index"] + delta
    if not 0 <= index < len(history["items"]):
        raise ValueError("No further history in that direction.")
    return {**history, "index": index}, Recipe.from_json(history["items"][index])


def check_restorable(engine: Engine, recipe: Recipe, models: list[str]) -> Recipe:
    """``recipe``, once checked that this studio has its model (and, when it names them, its weights)."""
    if recipe.model not in models:
        raise ValueError(f"This recipe needs the model {recipe.model!r}, which this studio does not have.")
    if recipe.weights_sha256:
        check_weights(recipe, engine.model(recipe.model))
    return recipe


def recipe_from_source(source: str | bytes | None) -> Recipe:
    """The recipe in a dropped file (a path) or pasted text (bytes)."""
    if not source:
        raise ValueError("Drop a PNG saved by the studio or paste a recipe first.")
    return read_recipe(Path(source)) if isinstance(source, str) else read_recipe(source)


def slider_labels(engine: Engine, name: str, method: str, count: int) -> list[str]:
    """The artist's names for model ``name``'s first ``count`` sliders of ``method``."""
    return directions.slider_names(engine.model(name).folder, method, count)


def name_slider(engine: Engine, name: str, method: str, index: int, text: str) -> None:
    """Keep the artist's name ``text`` for slider ``index`` in model ``name``'s folder."""
    directions.rename_slider(engine.model(name).folder, method, index, text)


def kept(items: list, path: str | None, recipe_json: str) -> list:
    """The favourites with the current image added."""
    if not path:
        raise ValueError("Nothing to keep yet: draw an image first.")
    recipe = Recipe.from_json(recipe_json)
    return [*items, (path, f"{recipe.model} · seed {recipe.seed}")]


def with_keyframe(frames: list[str], recipe_json: str) -> list[str]:
    """The keyframes with the current recipe added."""
    if not recipe_json:
        raise ValueError("Draw an image first.")
    if len(frames) >= MAX_KEYFRAMES:
        raise ValueError(f"An animation holds at most {MAX_KEYFRAMES} keyframes.")
    return [*frames, recipe_json]
