"""The Explore tab's controls as one unit: their values <-> a Recipe, the state of one image."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from studio import zoo
from studio.bending import spec
from studio.latent import MAX_EDIT
from studio.recipe import Recipe
from studio.ui.errors import shown_to_user
from studio.ui.explore_logic import recipe_from_controls, tuned_base

if TYPE_CHECKING:
    from studio.models.folder import ModelConfig

MAX_CLASSES = 16  # blend sliders built; a model with more classes blends its first 16
MAX_SLIDERS = 20
SLIDER_RANGE = MAX_EDIT  # the sliders reach as far as a recipe may
METHODS = [("Closed-form (SeFa)", "sefa"), ("PCA of features (GANSpace)", "pca")]

@dataclass
class Controls:
    """The components whose values make up an image's state, in a fixed order."""

    model: gr.Dropdown
    seed: gr.Number
    blend_on: gr.Checkbox
    class_name: gr.Dropdown
    blend: list[gr.Slider]
    truncation: gr.Slider
    method: gr.Radio
    sliders: list[gr.Slider]
    style: list[gr.components.Component]  # StyleGAN: mix seed, first, last; noise seed; sliders' first, last
    bends: gr.Textbox  # network bends, one per line
    tuned: gr.Slider  # a fine-tuned model's weights, from its base's (0) to its own (1)

    def inputs(self) -> list[gr.components.Component]:
        """The components, in the order ``recipe`` and ``values`` use."""
        return [self.model, self.seed, self.blend_on, self.class_name, *self.blend, self.truncation, self.method,
                *self.sliders, *self.style, self.bends, self.tuned]

    @shown_to_user
    def recipe(self, values: tuple[Any, ...], config_of: Callable[[str], ModelConfig] = zoo.model_config) -> Recipe:
        """The recipe the controls' ``values`` (in ``inputs`` order) describe.

        Raises:
            gr.Error: A value no image can be drawn from (no seed, unknown model, all-zero blend, a number
                that is not finite or out of range); these values may come from any API caller.
        """
        model, seed, blend_on, class_name = values[:4]
        blend = values[4 : 4 + MAX_CLASSES]
        truncation, method = values[4 + MAX_CLASSES : 6 + MAX_CLASSES]
        sliders = values[6 + MAX_CLASSES : 6 + MAX_CLASSES + MAX_SLIDERS]
        style = tuple(values[6 + MAX_CLASSES + MAX_SLIDERS : -2])
        return recipe_from_controls(config_of, model, seed, blend_on, class_name, blend, truncation, method, sliders,
                                    style, *values[-2:])

    def values(self, recipe: Recipe, config_of: Callable[[str], ModelConfig] = zoo.model_config) -> list[Any]:
        """Component updates (in ``inputs`` order) that show ``recipe``."""
        config = config_of(recipe.model)
        names = list(config.class_names)
        single = len(recipe.classes) == 1 and next(iter(recipe.classes.values())) > 0
        class_name = next(iter(recipe.classes)) if single else (names[0] if names else None)
        return [recipe.model, recipe.seed, bool(recipe.classes) and not single,
                gr.update(choices=names, value=class_name), *class_updates(names, recipe.classes),
                recipe.truncation, recipe.directions, *[recipe.edits.get(i, 0.0) for i in range(MAX_SLIDERS)],
                *style_updates(config.num_style_layers, recipe), "\n".join(spec(b) for b in recipe.bends),
                tuned_update(config, recipe.tuned)]


def style_updates(count: int, recipe: Recipe | None = None) -> list[Any]:
    """Updates of the style controls (``Controls.style`` order) for a model with ``count`` style layers,
    showing ``recipe``'s values (None: no mixing, constant noise, sliders on every layer)."""
    last = max(count - 1, 0)
    mix = recipe.mix_layers if recipe and recipe.mix_layers else (0, min(3, last))
    edit = recipe.edit_layers if recipe and recipe.edit_layers else (0, last)
    layer = {"minimum": 0, "maximum": max(last, 1)}  # Gradio needs maximum > minimum
    return [recipe.mix_seed if recipe else None, gr.update(value=mix[0], **layer), gr.update(value=mix[1], **layer),
            recipe.noise_seed if recipe else None, gr.update(value=edit[0], **layer),
            gr.update(value=edit[1], **layer)]


def tuned_update(config: ModelConfig, value: float | None = None) -> Any:
    """The "base <-> fine-tuned" slider for a model with ``config``: shown, naming the base, only for a fine-tuned
    model whose base this studio has; at ``value`` (None: 1, the model's own weights)."""
    base = tuned_base(config)
    label = f"Base ↔ fine-tuned: {base} (0) to this model (1)" if base else "Base ↔ fine-tuned"
    return gr.update(value=1.0 if value is None else value, visible=base is not None, label=label)


def class_updates(names: list[str], weights: dict[str, float]) -> list[Any]:
    """Updates of the ``MAX_CLASSES`` blend sliders: one per class name with its weight, the rest hidden."""
    shown = [gr.update(value=weights.get(n, 0.0), label=n, visible=True) for n in names[:MAX_CLASSES]]
    return shown + [gr.update(value=0.0, visible=False)] * (MAX_CLASSES - len(shown))
