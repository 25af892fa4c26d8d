"""Helpers for tests/test_reliability_*.py: raw HTTP, process memory, server logs, model variants.

Plain functions (no pytest fixtures), like service_fixtures.py, which they build on.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from service_fixtures import ServerProcess

from service.model.folder import sha256_file

KEY = "rel-key-0f3c9a7d1e"


def bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS, KiB) from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raw_http(
    port: int, data: bytes, timeout: float = 5.0, half_close: bool = False, until_close: bool = False
) -> bytes:
    """Send bytes as they are to 127.0.0.1:port; return what comes back by the first complete response
    (or, with until_close, by the time the server closes), or by the timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not until_close and _complete(b"".join(chunks)):
                    break
        return b"".join(chunks)


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def status_of(response: bytes) -> int | None:
    """The status code of a raw HTTP response, None when the server closed without answering."""
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response.split(b" ", 2)[1])


def log_records(server: ServerProcess) -> list[dict[str, Any]]:
    """Every JSON line the server wrote (all saring loggers), parsed."""
    records = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))  # each JSON line must parse: a broken one fails the test
    return records


def variant_model(src: Path, dst: Path, scale: float, name: str) -> Path:
    """A copy of a model folder with its classifier scaled: other probabilities, a new version, valid checksum."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    tensors = load_file(weights)
    tensors["classifier.weight"] = tensors["classifier.weight"] * scale
    tensors["classifier.bias"] = tensors["classifier.bias"] * scale
    save_file(tensors, weights, metadata={"format": "pt"})
    sidecar_path = dst / "saring.json"
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    sidecar["weights_sha256"] = sha256_file(weights)
    sidecar["version"] = f"{name}-{sidecar['weights_sha256'][:8]}"
    sidecar["name"] = name
    sidecar_path.write_text(json.dumps(sidecar, indent=2), encoding="utf-8")
    return dst
