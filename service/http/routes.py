"""HTTP handlers. They validate, call `Infer` and shape answers; they never touch the model."""

from __future__ import annotations

import time
from dataclasses import asdict

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.core.state import AppState
from service.errors import InvalidInput, NotReady
from service.features.flood import scope_of_key
from service.http.deps import Ready, State, require_ready
from service.http.errors import Forbidden
from service.http.fast_json import OrjsonRoute, json_response
from service.http.schemas import (
    FeedbackReceipt,
    FeedbackRequest,
    ModelInfo,
    ReloadRequest,
    ScoreRequest,
    ScoreResponse,
)
from service.logs import mask_pii
from service.model.scoring import score_rows

router = APIRouter(route_class=OrjsonRoute)  # request bodies parsed by orjson

# The API key of every /v1/ route is checked before this, from the headers (middleware.py).
Protected = [Ready]


def check_text_length(text: str, limit: int, where: str) -> None:
    """The one check of SARING_MAX_CHARS_PER_MESSAGE, for scored messages and feedback alike."""
    if len(text) > limit:
        raise InvalidInput(f"{where} has {len(text)} characters; the limit is {limit} (SARING_MAX_CHARS_PER_MESSAGE)")


@router.post("/v1/score", response_model=ScoreResponse, dependencies=Protected)
async def score(body: ScoreRequest, request: Request, state: State) -> Response:
    """Score messages: validity, spam, category and an accept/review/reject decision each, in request order."""
    s = state.settings
    deadline = time.monotonic() + s.request_timeout_s  # explanations included
    if body.explain and len(body.messages) > s.explain_max_messages:
        raise InvalidInput(
            f"explain=true for {len(body.messages)} messages; the limit is {s.explain_max_messages} "
            "(SARING_EXPLAIN_MAX_MESSAGES): send fewer messages or score without explain",
        )
    for i, message in enumerate(body.messages):
        check_text_length(message.text, s.max_chars_per_message, f"messages[{i}].text")
    texts = [m.text for m in body.messages]
    scored = await state.infer.score(texts)
    sidecar = scored.backend.sidecar
    explanations = [None] * len(texts)
    if body.explain:
        explanations = await state.explainer.explain(state.infer, scored.backend, texts, deadline=deadline)
    near_duplicates: list[int | None] = [None] * len(texts)
    if state.flood is not None:
        # Only answered calls are remembered (a refused call's retry is not its own duplicate); repeats
        # within a call count too.
        counts = await state.flood.observe_async(texts, flood_scope(request, state))
        if counts is not None:  # None: the shared flood store (Redis) is unavailable; the scores still go out
            near_duplicates = counts
    results = []
    decisions: dict[str, int] = {}
    for message, result, truncated, near, explanation in zip(
        body.messages,
        score_rows(scored.probs, sidecar),
        scored.truncated,
        near_duplicates,
        explanations,
        strict=True,
    ):
        decisions[result.decision] = decisions.get(result.decision, 0) + 1
        # ScoreResult's fields, from values the code made itself: no pydantic object per message, and
        # no validation of the response against the model (fast_json.py). Extras left out when None.
        entry = {
            "id": message.id,
            "validity": result.validity,
            "spam": result.spam,
            "category": result.category,
            "probabilities": result.probabilities,
            "decision": result.decision,
            "is_spam": result.is_spam,
            "truncated": truncated,
        }
        if near is not None:
            entry["near_duplicates"] = near
        if explanation is not None:
            entry["explanation"] = [asdict(w) for w in explanation]
        results.append(entry)
    for decision, count in decisions.items():
        state.metrics.decisions.labels(decision).inc(count)
    state.metrics.spam_flags.inc(sum(r["is_spam"] for r in results))
    log_fields = {"messages": len(texts), "decisions": decisions, "model_version": sidecar.version}
    if s.log_texts:
        log_fields["texts"] = [mask_pii(t) for t in texts]
    request.scope["state"]["log_fields"] = log_fields
    return json_response({"model": {"name": sidecar.name, "version": sidecar.version}, "results": results})


def flood_scope(request: Request, state: AppState) -> str:
    """Whose floods a call is counted with: with API keys set, its key's own (a caller never learns from
    near_duplicates what another key's caller sent), unless SARING_FLOOD_SHARED_ACROSS_KEYS."""
    if not state.api_keys or state.settings.flood_shared_across_keys:
        return ""
    _, _, token = request.headers.get("authorization", "").partition(" ")  # checked by the middleware
    return scope_of_key(token.strip())


@router.post(
    "/v1/feedback",
    response_model=FeedbackReceipt,
    status_code=201,
    dependencies=Protected,
    responses={200: {"model": FeedbackReceipt, "description": "This (id, label) was already stored; nothing changed."}},
)
async def feedback(body: FeedbackRequest, request: Request, response: Response, state: State) -> FeedbackReceipt:
    """Record the desk's true category for a scored message. 201: stored on disk; 200: already stored."""
    sidecar = state.infer.backend.sidecar
    # The desk's own labels are accepted through the label map the model was trained with, and stored
    # as the model's label, so exported feedback trains together with the desk's files.
    label = sidecar.model_label(body.label)
    if label is None:
        allowed = [*sidecar.labels, *(raw for raw in sidecar.label_map if raw not in sidecar.labels)]
        raise InvalidInput(f"label {body.label!r} is not a label of the served model; allowed: {', '.join(allowed)}")
    check_text_length(body.text, state.settings.max_chars_per_message, "text")
    row, created = await state.feedback.record(
        message_id=body.id,
        label=label,
        text=body.text,
        note=body.note,
        moderator_id=body.moderator_id,
        model_name=sidecar.name,
        model_version=sidecar.version,
    )
    response.status_code = 201 if created else 200
    request.scope["state"]["log_fields"] = {"feedback_label": label, "created": created}  # never the text
    return FeedbackReceipt(
        id=row.message_id,
        label=row.label,
        created=created,
        received_at=row.received_at.isoformat(),
        model_version=row.model_version,
    )


@router.get("/v1/model", response_model=ModelInfo, dependencies=Protected)
async def model_info(state: State) -> dict:
    """The served model: name, version, labels, thresholds, headline figures and the last reload error."""
    return state.model_info()


@router.post("/v1/admin/reload", response_model=ModelInfo)
async def reload_model(state: State, body: ReloadRequest | None = None) -> dict:
    """Load a model folder without a restart; requests in flight finish on the old model."""
    if not state.api_keys:
        raise Forbidden("admin endpoints are disabled: set SARING_API_KEYS to enable them")
    await require_ready(state)
    await state.reload(body.model_dir if body else None)
    return state.model_info()


@router.get("/healthz")
async def healthz() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> dict:
    """The model is loaded and warmed up: send traffic. 503 from the moment SIGTERM arrives (draining)."""
    if state.draining:
        raise NotReady("draining: this replica is shutting down, send traffic to another", retry_after=5)
    await require_ready(state)
    return {"status": "ready", "model": state.infer.backend.sidecar.version}


@router.get("/metrics", include_in_schema=False)
async def metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
