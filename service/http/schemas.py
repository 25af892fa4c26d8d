"""Request and response bodies of the scoring API (docs/design.md section 4)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from service.errors import TooLarge
from service.model.text_rules import unusable_text

# The messages-per-call limit of the app serving this request (set by a dependency, which FastAPI runs
# before it validates the body): a call with 100,000 tiny messages is refused before a single message
# is validated, in microseconds, not after a second of event-loop time.
message_limit: ContextVar[int | None] = ContextVar("saring_message_limit", default=None)


class Message(BaseModel):
    id: str | None = Field(None, max_length=256, description="Caller's id, echoed back (null when absent).")
    text: str = Field(description="The message as received (WhatsApp, SMS, web form).")

    @field_validator("text")
    @classmethod
    def _usable_text(cls, text: str) -> str:
        problem = unusable_text(text)
        if problem:
            raise ValueError(problem)
        return text


class ScoreRequest(BaseModel):
    messages: list[Message] = Field(min_length=1, description="Messages to score, answered in this order.")
    explain: bool = Field(False, description="Also return the words that moved validity and spam most (slower).")

    @field_validator("messages", mode="before")
    @classmethod
    def _within_limit(cls, messages: Any) -> Any:
        limit = message_limit.get()
        if limit is not None and isinstance(messages, list) and len(messages) > limit:
            # Not a ValueError: pydantic lets it through to the 413 handler, with the route's own message.
            raise TooLarge(
                f"{len(messages)} messages in one call; the limit is {limit} (SARING_MAX_MESSAGES_PER_REQUEST)"
            )
        return messages


class ModelRef(BaseModel):
    name: str
    version: str


class WordWeight(BaseModel):
    word: str
    validity: float = Field(
        description="How much removing this word lowers validity, in log-odds (positive: it made the message look "
        "genuine; 0.7 is about a doubling of the odds)."
    )
    spam: float = Field(description="How much removing this word lowers spam, in log-odds.")


class ScoreResult(BaseModel):
    id: str | None
    validity: float = Field(description="P(genuine, actionable complaint), calibrated.")
    spam: float = Field(description="P(spam) + P(prank), calibrated.")
    category: str = Field(description="Most likely label.")
    probabilities: dict[str, float]
    decision: Literal["accept", "review", "reject"]
    is_spam: bool
    truncated: bool = Field(description="The text was longer than the model reads and was cut.")
    # Optional extras are left out of the answer when unset; `id` is always there (null when absent).
    near_duplicates: int | None = Field(
        None, description="Near-identical messages seen recently (flood detection).", exclude_if=lambda v: v is None
    )
    explanation: list[WordWeight] | None = Field(None, exclude_if=lambda v: v is None)


class ScoreResponse(BaseModel):
    model: ModelRef
    results: list[ScoreResult]


class ModelInfo(BaseModel):
    name: str
    version: str
    base_model: str
    labels: list[str]
    scores: dict[str, list[str]]
    thresholds: dict[str, dict[str, Any]]
    temperature: float
    max_length: int
    created_at: str
    metrics: dict[str, Any] = Field(description="Summary of the folder's validation and test figures.")
    backend: str
    device: str
    precision: str = Field(
        description="What the forward computes in: fp32, bf16 or fp16 (torch); fp32 or int8 (onnx; file: a path given)."
    )
    model_dir: str
    last_reload_error: str | None = Field(None, description="Why the last reload was refused, if it was.")


class ReloadRequest(BaseModel):
    # max_length also makes pydantic refuse text UTF-8 cannot carry (a lone surrogate): 422, not a 500
    # later when the refusal or /v1/model quotes the path.
    model_dir: str | None = Field(
        None, max_length=4096, description="Folder to load; default: the configured SARING_MODEL_DIR."
    )


class FeedbackRequest(BaseModel):
    id: str = Field(min_length=1, max_length=256, description="The id the message was scored under.")
    text: str = Field(description="The message text, as scored: the training example.")
    label: str = Field(min_length=1, max_length=64, description="The true category, one of the model's labels.")
    note: str | None = Field(None, max_length=2000, description="Free text from the desk (why, context).")
    moderator_id: str | None = Field(None, max_length=256, description="Who decided.")

    @field_validator("text")
    @classmethod
    def _usable_text(cls, text: str) -> str:
        return Message._usable_text(text)  # the same rules as a scored message


class FeedbackReceipt(BaseModel):
    id: str
    label: str
    created: bool = Field(description="False: this (id, label) was already stored; the stored row is returned.")
    received_at: str = Field(description="When the verdict was first stored (UTC, ISO 8601).")
    model_version: str | None = Field(None, description="The model served when the verdict was first stored.")
