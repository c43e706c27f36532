"""Converters from third-party layouts to studio model folders' tensors and configs.

Each reads tensors only and never executes a file: PyTorch files go through ``pytorch_file``
(``torch.load(weights_only=True)``). A converter refuses what it cannot convert with
``ConversionError``, in words fit to show a user.
"""


class ConversionError(ValueError):
    """A file is unreadable, or its tensors do not fit the layout it claims; the message says which."""
