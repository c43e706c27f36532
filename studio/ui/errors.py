"""The errors a tab shows the artist in words (as ``gr.Error``) rather than as a crash."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from studio import hub, zoo
from studio.engine import EngineBusy, EngineTimeout, GenerationError

# Unknown or unreadable model, a request or value the studio refuses (ValueError, from the logic modules
# and the core alike), a busy or timed-out engine, a failed batch, a Hub that cannot be reached.
USER_ERRORS = (zoo.ModelUnavailable, ValueError, EngineBusy, EngineTimeout, GenerationError, hub.HubError)

Callback = TypeVar("Callback", bound=Callable[..., Any])


def shown_to_user(callback: Callback) -> Callback:
    """Wrap a tab's callback so the errors in ``USER_ERRORS`` reach the browser as their message.

    Gradio reads the wrapped function's signature (through ``__wrapped__``), so special arguments such
    as ``gr.SelectData`` keep working.
    """
    # Imported here, not at the top: the gradio-free logic modules import USER_ERRORS from this module.
    import gradio as gr

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from None

    return wrapper  # type: ignore[return-value]
