"""deploy/compose.replicas.yml, the several-replicas override of docker-compose.yml, checked without Docker."""

from __future__ import annotations

from pathlib import Path

import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


class _ComposeLoader(yaml.SafeLoader):
    """Compose's `!reset` tag (drop the base file's value) read as what it leaves: an empty value."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: [] if isinstance(node, yaml.SequenceNode) else None)


def override() -> dict:
    return yaml.load((ROOT / "deploy" / "compose.replicas.yml").read_text(encoding="utf-8"), Loader=_ComposeLoader)


def test_replicas_publish_nothing_and_nginx_publishes_the_api_port() -> None:
    services = override()["services"]
    assert services["api"]["ports"] == []  # --scale api=3 would otherwise fight over one host port
    assert services["nginx"]["ports"] == ["${SARING_PUBLISH:-127.0.0.1:8000}:8080"]
    (mount,) = services["nginx"]["volumes"]
    assert (ROOT / mount["source"]).resolve() == ROOT / "deploy" / "nginx" / "saring.conf"
    assert "listen 8080;" in (ROOT / "deploy" / "nginx" / "saring.conf").read_text(encoding="utf-8")
    assert "server api:8000" in (ROOT / "deploy" / "nginx" / "saring.conf").read_text(encoding="utf-8")


def test_replicas_share_redis_and_postgresql_through_real_settings() -> None:
    services = override()["services"]
    fields = {f"SARING_{name.upper()}" for name in Settings.model_fields}
    env = services["api"]["environment"]
    assert set(env) <= fields
    assert env["SARING_FLOOD_REDIS_URL"].startswith("redis://redis:")
    database = env["SARING_FEEDBACK_DB_URL"]
    assert database.startswith("postgresql+psycopg://") and "@postgres:" in database
    assert set(services["api"]["depends_on"]) == {"redis", "postgres"}
