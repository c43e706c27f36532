"""The errors a tab shows the artist in words (as ``gr.Error``) rather than as a crash."""

from studio import zoo
from studio.engine import EngineBusy, EngineTimeout, GenerationError

# Unknown or unreadable model, a request the model refuses, a busy or timed-out engine, a failed batch.
USER_ERRORS = (zoo.ModelUnavailable, ValueError, EngineBusy, EngineTimeout, GenerationError)
