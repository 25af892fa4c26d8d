"""A failing forward fails only the requests with a message in that batch; everything else is answered."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_fixtures import ADUAN, BUKAN, ISENG, SPAM, assert_error_shape, make_settings, metric_value

from service.http.app import create_app
from service.model.encoding import Encoded

MARKER = "lapor lapor lapor lapor"  # a text no other test message tokenises to


class FailingBackend:
    """The real TorchBackend, except that a forward over a batch holding MARKER raises.

    `hold_marker`: the failing forward first waits until another request has been tokenised, so
    that request is queued while the failing batch runs. `sibling_delay_s` slows other forwards.
    """

    def __init__(self, real, hold_marker: bool = False, sibling_delay_s: float = 0.0) -> None:
        self.real = real
        self.sidecar = real.sidecar
        self.device, self.precision, self.kind = real.device, real.precision, real.kind
        self.marker_ids = list(real.encode([MARKER]).ids[0])
        self.hold_marker = hold_marker
        self.sibling_delay_s = sibling_delay_s
        self.other_request_tokenised = threading.Event()
        self.marker_forward_started = threading.Event()
        self.forwarded: list[list[list[int]]] = []
        self.failed = 0

    def encode(self, texts: Sequence[str]) -> Encoded:
        if MARKER not in texts:
            self.other_request_tokenised.set()
        return self.real.encode(texts)

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        if any(list(ids) == self.marker_ids for ids in batch):
            self.marker_forward_started.set()
            if self.hold_marker:
                self.other_request_tokenised.wait(timeout=20)
            self.failed += 1
            raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")
        if self.sibling_delay_s:
            time.sleep(self.sibling_delay_s)
        self.forwarded.append([list(ids) for ids in batch])
        return self.real.forward(batch)


def failing_app(model_dir: Path, holder: list, **settings):
    from service.model.torch_backend import TorchBackend

    options = {k: settings.pop(k) for k in ("hold_marker", "sibling_delay_s") if k in settings}

    def factory(folder: Path) -> FailingBackend:
        backend = FailingBackend(TorchBackend(folder, device="cpu"), **options)
        holder.append(backend)
        return backend

    return create_app(make_settings(model_dir, **settings), backend_factory=factory)


def post(client: TestClient, *texts: str):
    return client.post("/v1/score", json={"messages": [{"text": t} for t in texts]})


def test_model_error_is_a_5xx_in_the_error_shape_and_the_service_recovers(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder: list[FailingBackend] = []
    with TestClient(failing_app(tiny_model_dir, holder, max_batch_size=1)) as client:
        with caplog.at_level(logging.ERROR, logger="saring"):
            response = post(client, MARKER)
        error = assert_error_shape(response, 500)
        assert error["type"] == "model_error"
        assert "illegal memory access" not in error["message"]  # internals stay in the server log
        assert "forward failed" in caplog.text and "illegal memory access" in caplog.text

        # The batcher is still alive: the next requests are scored.
        for _ in range(3):
            answer = post(client, ADUAN, SPAM)
            assert answer.status_code == 200, answer.text
            assert [r["category"] for r in answer.json()["results"]] == ["aduan", "spam"]
        assert client.get("/readyz").status_code == 200
        text = client.get("/metrics").text
    assert metric_value(text, "saring_requests_total", route="/v1/score", status="500") == 1
    assert metric_value(text, "saring_requests_total", route="/v1/score", status="200") == 3
    assert holder[0].failed == 1


@pytest.mark.parametrize("max_batch_size", [1, 8])
def test_concurrent_request_outside_the_failing_batch_is_answered(tiny_model_dir: Path, max_batch_size: int) -> None:
    """While a batch with the marker fails, a request queued meanwhile runs in the next batch: 200."""
    holder: list[FailingBackend] = []
    app = failing_app(tiny_model_dir, holder, max_batch_size=max_batch_size, hold_marker=True)
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        backend = holder[0]
        backend.other_request_tokenised.clear()  # the start-up warm-up tokenised a text too
        failing = pool.submit(post, client, MARKER)
        # Send the other request only once the marker's batch is in the model (held there until then).
        assert backend.marker_forward_started.wait(timeout=20)
        ok = pool.submit(post, client, ADUAN, BUKAN, ISENG)
        failing, ok = failing.result(timeout=30), ok.result(timeout=30)
    assert_error_shape(failing, 500)
    assert ok.status_code == 200, ok.text
    assert [r["category"] for r in ok.json()["results"]] == ["aduan", "bukan_aduan", "iseng"]
    assert holder[0].failed == 1


def test_a_failed_message_fails_its_request_and_its_siblings_are_dropped(tiny_model_dir: Path) -> None:
    """One call with the marker and three longer texts, one message per batch: the call gets 500 once
    the marker's batch fails, and its remaining messages are not run through the model for nothing."""
    holder: list[FailingBackend] = []
    app = failing_app(tiny_model_dir, holder, max_batch_size=1, sibling_delay_s=0.2)
    with TestClient(app) as client:
        backend = holder[0]
        backend.forwarded.clear()  # the start-up warm-up
        response = post(client, ADUAN, MARKER, SPAM + " " + SPAM, BUKAN + " " + BUKAN)
        assert_error_shape(response, 500)
        assert backend.failed == 1
        # The queue is FIFO: once a later call is answered, the failed call's messages are all gone.
        assert post(client, ISENG).status_code == 200
        iseng_ids = backend.real.encode([ISENG]).ids[0]
        siblings = [batch for batch in backend.forwarded if batch != [iseng_ids]]
        # Shortest first: the marker failed first; at most the batch already handed to the model
        # thread ran, not all three of its siblings.
        assert len(siblings) <= 1
