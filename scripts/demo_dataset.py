"""Write a small "artist's set" for trying fine-tuning offline: eyes from the default model, repainted
as two-tone pop-art prints (posterised luminance mapped from deep magenta to pale cyan).

The style is far from anything the base model draws, so a fine-tune that learns it shows clearly in
the SWD and in the previews. Usage: python scripts/demo_dataset.py OUT_DIR [--count 300]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio import zoo  # noqa: E402
from studio.engine import Engine, Request  # noqa: E402
from studio.media import save_png  # noqa: E402

DARK = np.array([90, 10, 80], np.float32)
LIGHT = np.array([170, 240, 235], np.float32)


def duotone(image: np.ndarray, levels: int = 4) -> np.ndarray:
    """Posterise ``[H, W, 3]`` uint8 luminance into ``levels`` steps between two ink colours."""
    lum = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255  # [H, W]
    steps = np.floor(lum * levels).clip(0, levels - 1) / (levels - 1)
    return (DARK + steps[..., None] * (LIGHT - DARK)).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    classes = zoo.model_config(zoo.DEFAULT_MODEL).class_names
    with Engine(timeout_s=3600) as engine:
        for i in range(args.count):
            seed = 10_000 + i  # seeds the previews and metrics (0-...) do not use
            image = engine.generate(Request(zoo.DEFAULT_MODEL, (seed,), classes[i % len(classes)], 0.8))[0]
            save_png(args.out / f"print{i:04d}.png", duotone(image))
    print(f"wrote {args.count} images to {args.out}/")


if __name__ == "__main__":
    main()
