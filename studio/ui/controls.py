"""The Explore tab's controls as one unit: their values <-> a Recipe, the state of one image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio import zoo
from studio.latent import MAX_EDIT, check_seed
from studio.recipe import Recipe

MAX_SEED = 2**32 - 1
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

    def inputs(self) -> list[gr.components.Component]:
        """The components, in the order ``recipe`` and ``values`` use."""
        return [self.model, self.seed, self.blend_on, self.class_name, *self.blend, self.truncation, self.method,
                *self.sliders]

    def recipe(self, values: tuple[Any, ...], weights_sha256: str = "") -> Recipe:
        """The recipe the controls' ``values`` (in ``inputs`` order) describe.

        Raises:
            gr.Error: A value no image can be drawn from (no seed, unknown model, all-zero blend, a number
                that is not finite or out of range); these values may come from any API caller.
        """
        model, seed, blend_on, class_name = values[:4]
        blend = values[4 : 4 + MAX_CLASSES]
        truncation, method = values[4 + MAX_CLASSES : 6 + MAX_CLASSES]
        sliders = values[6 + MAX_CLASSES :]
        if not isinstance(model, str):
            raise gr.Error("Pick a model.")
        try:
            names = zoo.model_config(model).class_names
        except zoo.ModelUnavailable as e:
            raise gr.Error(str(e)) from None
        if seed is None:
            raise gr.Error("Enter a seed: a whole number from 0 to 4294967295.")
        if not names:
            classes = {}
        elif blend_on:
            classes = {n: w for n, w in zip(names, blend) if w}
            if not classes:
                raise gr.Error("Give at least one class a weight above zero to blend.")
        else:
            classes = {class_name: 1.0} if class_name else {}
        edits = {i: v for i, v in enumerate(sliders) if v}
        try:
            return Recipe(model, weights_sha256, check_seed(seed), classes, truncation, method, edits)
        except ValueError as e:  # the seed's and the recipe's own checks, in words
            raise gr.Error(str(e)) from None

    def values(self, recipe: Recipe) -> list[Any]:
        """Component updates (in ``inputs`` order) that show ``recipe``."""
        names = list(zoo.model_config(recipe.model).class_names)
        single = len(recipe.classes) == 1 and next(iter(recipe.classes.values())) > 0
        class_name = next(iter(recipe.classes)) if single else (names[0] if names else None)
        blend = [gr.update(value=recipe.classes.get(n, 0.0), label=n, visible=True) for n in names[:MAX_CLASSES]]
        blend += [gr.update(value=0.0, visible=False)] * (MAX_CLASSES - len(blend))
        sliders = [recipe.edits.get(i, 0.0) for i in range(MAX_SLIDERS)]
        return [recipe.model, recipe.seed, bool(recipe.classes) and not single,
                gr.update(choices=names, value=class_name), *blend, recipe.truncation, recipe.directions, *sliders]
