"""Every knob of the service, read from `SARING_*` environment variables (or a .env file).

The help text of each field says what it does and how to tune it; README.md's configuration
table is generated from the same descriptions.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SARING_", env_file=".env", extra="ignore")

    # Where and what to serve
    model_dir: Path = Field(Path("models/default"), description="Model folder to serve (docs/design.md section 2).")
    host: str = Field("127.0.0.1", description="Interface to bind; 0.0.0.0 inside containers.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description="Inference backend: torch, onnx (ONNX Runtime; needs an export), or auto: onnx on CPU when the "
        "folder records an accepted int8 export of its weights (the fastest CPU path), else torch.",
    )
    onnx_variant: Literal["auto", "fp32", "int8"] = Field(
        "auto",
        description="With backend onnx: which export to serve. auto: int8 when saring.json records an accepted "
        "one (`python -m training export --int8 --data FILE`), else fp32.",
    )
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N.")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Torch backend precision. auto: bf16 (or fp16) on GPUs; on CPU bf16 when the CPU computes "
        "bf16 natively (AVX-512-BF16, AMX) and the folder passed its bf16 accuracy gate at training time "
        "(saring.json `precision`), else fp32. bf16 is 1.6-1.7x faster than fp32 on AVX-512-BF16 (see bench/).",
    )
    num_threads: int | None = Field(
        None,
        ge=1,
        description="Intra-op threads for the model on CPU. Default: cores - 1 (at least 1), leaving a core "
        "for the event loop and tokenisation; more threads than free cores slows everything down.",
    )

    # Batching
    max_batch_size: int = Field(32, ge=1, description="Most messages in one forward pass.")
    max_batch_tokens: int | None = Field(
        None,
        ge=16,
        description="Most padded tokens (longest message x batch size) in one forward; bounds memory and "
        "keeps a few long messages from slowing a whole batch. Default by device: 512 on CPU, where a batch's "
        "activations stay in cache (e5-small ONNX int8: 113 msg/s at 512, 94 at 4096), 16384 on a GPU.",
    )
    max_wait_ms: float = Field(
        2.0, ge=0, description="How long the batcher waits for more messages before running a partial batch."
    )

    # Admission and limits
    max_inflight_requests: int = Field(
        64, ge=1, description="Requests admitted at once; more get 429 with Retry-After immediately."
    )
    max_queued_messages: int = Field(
        4096, ge=1, description="Messages waiting for the model; a request that would exceed it gets 429."
    )
    request_timeout_s: float = Field(
        10.0, gt=0, description="A request not answered within this time gets 503 (never a hang)."
    )
    max_messages_per_request: int = Field(256, ge=1, description="Messages in one /v1/score call.")
    max_chars_per_message: int = Field(
        10_000, ge=1, description="Characters in one message; longer ones are refused (422) before tokenising."
    )
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above).")
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request body not fully received this long after its headers gets 408 and the connection is "
        "closed: a slow or silent client cannot hold a connection. Header timeouts belong to the reverse proxy.",
    )
    limit_concurrency: int | None = Field(
        1000,
        ge=1,
        description="Open connections plus requests in progress above which uvicorn answers 503 at once (uvicorn's "
        "--limit-concurrency). Empty: no limit.",
    )
    backlog: int = Field(
        2048, ge=1, description="Connections the kernel queues before they are accepted (uvicorn's --backlog)."
    )

    # Feedback, flood detection and explanations
    feedback_db_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the feedback database (e.g. postgresql+psycopg://user@host/saring for larger "
        "deployments). Empty: SQLite at SARING_FEEDBACK_DB_PATH.",
    )
    feedback_db_path: Path = Field(
        Path("data/feedback/feedback.sqlite3"),
        description="SQLite file for POST /v1/feedback when no database URL is set (WAL mode, fsync on commit). "
        "It holds message texts: keep it on private, backed-up storage.",
    )
    flood_detection: bool = Field(True, description="Count near-duplicate messages (copy-paste floods) per result.")
    flood_window_s: float = Field(
        600.0, gt=0, description="How far back near-duplicates are counted (seconds); older messages are forgotten."
    )
    flood_max_tracked: int = Field(
        20_000,
        ge=1,
        description="Most messages remembered for flood detection, per replica (about 2.4 KB each: 50 MB at 20,000) "
        "or, with Redis, per scope in Redis; the oldest go first. Bounds memory when a flood outruns the window.",
    )
    flood_similarity: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Estimated Jaccard similarity of character 5-grams (after normalising case, digits, links, "
        "punctuation and emoji) from which two messages count as near-duplicates.",
    )
    flood_redis_url: str | None = Field(
        None,
        description="Redis URL (e.g. redis://redis:6379/0) where every replica keeps flood state, so a flood split "
        "over replicas is counted as one. Empty: in-process, per replica. Redis down or slower than "
        "SARING_FLOOD_REDIS_TIMEOUT_S: scores still answer, near_duplicates is null.",
    )
    flood_redis_timeout_s: float = Field(
        0.25, gt=0, description="Longest wait for one Redis operation of flood detection; then near_duplicates is null."
    )
    flood_shared_across_keys: bool = Field(
        False,
        description="With API keys set, count near-duplicates across all keys. Default: per key, so one caller never "
        "learns from near_duplicates what another sent; set it for a single desk using several keys.",
    )
    explain_max_messages: int = Field(
        16, ge=1, description="Most messages in one /v1/score call with explain=true (422 above)."
    )
    explain_max_words: int = Field(
        64, ge=1, description="Distinct words per message that explain=true occludes (one extra forward row each)."
    )
    explain_top_k: int = Field(5, ge=1, le=64, description="Words returned per message by explain=true.")
    explain_max_inflight: int = Field(
        2, ge=1, description="Explained requests running at once; more get 429 with Retry-After."
    )
    explain_batch_tokens: int = Field(
        1024,
        ge=16,
        description="Most padded tokens in one explanation batch. Explanation batches run only while no message "
        "waits to be scored, so a plain score waits behind at most one of them: smaller keeps scoring fast.",
    )

    # Security and logs
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys; when set, /v1/* needs 'Authorization: Bearer <key>'. Empty: no auth.",
    )
    api_keys_file: Path | None = Field(
        None, description="File with one API key per line (e.g. a Docker secret), added to SARING_API_KEYS."
    )
    protect_docs_and_metrics: bool = Field(
        False,
        description="With API keys set, also require the key on /metrics, /docs, /redoc and /openapi.json (open by "
        "default, for Prometheus and the interactive docs).",
    )
    log_texts: bool = Field(
        False, description="Log message texts (NIK-like numbers and phone numbers masked). Off by default."
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    warmup: bool = Field(True, description="Run one batch at start-up before /readyz reports ready.")
    drain_s: float = Field(
        2.0,
        ge=0,
        description="On SIGTERM, how long the replica keeps serving with /readyz 503 and 'Connection: close' on "
        "every answer before it closes its port, so load balancers stop sending first (0: close at once).",
    )
    graceful_shutdown_s: float = Field(
        30.0, gt=0, description="On SIGTERM, how long accepted requests may take to finish before exit."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    def all_api_keys(self) -> list[str]:
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_keys_file:
            lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return keys

    def threads(self) -> int:
        import os

        return self.num_threads or max(1, (os.cpu_count() or 2) - 1)


def default_of(name: str):
    """A setting's default: the one place batching and limit defaults come from, inside and outside the app."""
    return Settings.model_fields[name].default


@lru_cache
def get_settings() -> Settings:
    return Settings()
