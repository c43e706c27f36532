"""Limits on what one visitor can make the server take in, stated in the README and the UI."""

from __future__ import annotations

import os

# An upload is one artwork or a zip of a data set: 200 MB holds hundreds of full-size paintings.
MAX_UPLOAD_MB = 200
UPLOAD_ENV = "STUDIO_MAX_UPLOAD_MB"  # a host with more room (or a test) may set another limit


def max_upload_mb() -> float:
    """The largest upload in MB: ``$STUDIO_MAX_UPLOAD_MB`` if set, else ``MAX_UPLOAD_MB``.

    Raises:
        ValueError: The variable is not a positive number.
    """
    text = os.environ.get(UPLOAD_ENV, "").strip()
    if not text:
        return MAX_UPLOAD_MB
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"{UPLOAD_ENV} must be a positive number of megabytes, not {text!r}")
    return value


def max_upload_bytes() -> int:
    """The largest upload in bytes (see ``max_upload_mb``)."""
    return int(max_upload_mb() * 2**20)
