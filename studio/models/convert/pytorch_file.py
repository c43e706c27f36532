"""The safe reader of third-party PyTorch files: tensors only, never code."""

from __future__ import annotations

import io
import pickle
import re
import warnings
from pathlib import Path

import torch

from studio.models.convert import ConversionError


def load_weights_only(source: Path | io.BytesIO, where: str, extra_types: tuple[type, ...] = ()) -> object:
    """Read tensors from a PyTorch file with ``torch.load(weights_only=True)``, which never runs code.

    Args:
        source: The file, or its bytes.
        where: How to name it in messages.
        extra_types: Plain data classes the file may also hold (``argparse.Namespace`` in a training
            checkpoint), allowed for this read only; they are rebuilt from their attributes, none of their
            code runs.

    Raises:
        ConversionError: The file is damaged, or holds more than tensors (refused in the studio's
            words: torch's own message advises loading the file unsafely).
    """
    try:
        # Both are scoped to this read: torch warns about unusual pickle protocols on the way to refusing them.
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(extra_types)):
            warnings.simplefilter("ignore")
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        wanted = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(e))))  # what the pickle asked to import and call
        classes = [name for name in wanted if name.rpartition(".")[2][:1].isupper()]
        if classes:  # torch.save(model) pickles the module object, which rebuilding would import its class for
            raise ConversionError(f"{where} was refused: it holds a whole pickled object of class {classes[0]}, "
                                  f"and reading it would import and run that class's code, which the studio never "
                                  f"does with a model file; save the network's state_dict() instead, which holds "
                                  f"tensors only") from None
        if wanted:
            raise ConversionError(f"{where} was refused: it asks to import and call {', '.join(wanted)}, and the "
                                  f"studio never runs code from a model file; save the generator's state_dict() "
                                  f"alone, which holds tensors only") from None
        raise ConversionError(f"{where} is not a readable PyTorch tensor file ({_pickle_problem(str(e))}); the "
                              f"studio reads tensors only and never runs code from a model file") from None
    except Exception as e:  # a damaged or foreign file fails in many ways; torch's first sentence says how
        raise ConversionError(f"{where} is not a readable PyTorch tensor file ({str(e).split('. ')[0]})") from None


def _pickle_problem(message: str) -> str:
    """The line of torch's refusal that says what it met, without its advice to load the file unsafely."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    facts = [line for line in lines if not re.search(r"weights.only|torch\.load", line, re.IGNORECASE)]
    return facts[0].rstrip(".") if facts else "an object torch's safe reader does not accept"
