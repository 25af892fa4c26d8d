"""What can go wrong below the HTTP edge, as types (docs/design.md section 5).

The inference core, the features and the model loader raise these; none of them knows an HTTP
status. `service/http/errors.py` maps each type to a status, an error `type` and `Retry-After` in one
table, as text-embeddings-inference maps its `TextEmbeddingsError` to an `ErrorResponse`.
"""

from __future__ import annotations


class SaringError(Exception):
    """Base of every refusal the service gives; `retry_after` (seconds) when waiting helps."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidInput(SaringError):
    """The caller sent something the service cannot score or store (a limit, a label, a text)."""


class TooLarge(SaringError):
    """The call is larger than a configured size limit (messages per call, body bytes)."""


class Overloaded(SaringError):
    """No admission permit or no queue room now; the caller should retry later."""


class TimedOut(SaringError):
    """The work was admitted but not finished within the request timeout."""


class NotReady(SaringError):
    """The model is still loading, or the process is draining for shutdown."""


class ModelFailed(SaringError):
    """The forward pass failed or returned non-finite numbers; only its batch's messages fail."""


class ModelFolderRefused(SaringError):
    """A model folder offered for (re)loading was refused; the previous model keeps serving."""


class FeedbackUnavailable(SaringError):
    """The configured feedback store cannot work (driver missing, database unreachable)."""
