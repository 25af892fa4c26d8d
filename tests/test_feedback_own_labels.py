"""POST /v1/feedback takes the desk's own labels through the served folder's label map."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from fastapi.testclient import TestClient
from service_fixtures import ADUAN, SPAM, make_settings

from service.http.app import create_app

LABEL_MAP = {"valid": "aduan", "chat": "bukan_aduan", "junk": "spam"}


def test_feedback_accepts_mapped_labels_and_stores_the_models_label(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "desk"
    shutil.copytree(tiny_model_dir, folder)
    sidecar = json.loads((folder / "saring.json").read_text(encoding="utf-8"))
    sidecar["label_map"] = LABEL_MAP  # as `train --label_map` records it
    (folder / "saring.json").write_text(json.dumps(sidecar), encoding="utf-8")
    db = tmp_path / "feedback.sqlite3"
    with TestClient(create_app(make_settings(folder, feedback_db_path=db))) as client:
        desk = client.post("/v1/feedback", json={"id": "wa-1", "text": ADUAN, "label": "valid"})
        assert desk.status_code == 201, desk.text
        assert desk.json()["label"] == "aduan"
        # The model's own label is still accepted, and is the same verdict: nothing new is stored.
        same = client.post("/v1/feedback", json={"id": "wa-1", "text": ADUAN, "label": "aduan"})
        assert same.status_code == 200 and same.json()["created"] is False
        assert client.post("/v1/feedback", json={"id": "wa-2", "text": SPAM, "label": "junk"}).status_code == 201
        refused = client.post("/v1/feedback", json={"id": "wa-3", "text": SPAM, "label": "sampah"})
        assert refused.status_code == 422
        message = refused.json()["error"]["message"]
        assert "'sampah'" in message and "valid" in message and "aduan" in message
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT message_id, label FROM feedback ORDER BY seq").fetchall()
    assert rows == [("wa-1", "aduan"), ("wa-2", "spam")]
