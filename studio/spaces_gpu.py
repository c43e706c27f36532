"""ZeroGPU support: ``gpu()`` marks a function that needs the GPU, through Hugging Face's ``spaces`` package.

On ZeroGPU hardware a Space holds a GPU only while a function decorated with ``spaces.GPU`` runs.
Where ``spaces`` is not installed the decorator changes nothing, and where it is installed on other
hardware ``spaces.GPU`` itself returns the function unchanged: so the studio's code is the same
everywhere, and nothing here imports gradio or huggingface_hub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def gpu(duration: int | None = None) -> Callable[[F], F]:
    """A decorator for a function that runs on the GPU: ``spaces.GPU(duration=...)`` where importable.

    Args:
        duration: Longest run in seconds that ZeroGPU should reserve the GPU for (None: its default, 60).
    """
    try:
        import spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)
