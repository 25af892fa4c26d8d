"""Waiting for a saring server the bench started: the one readiness loop every bench uses."""

from __future__ import annotations

import subprocess
import time

import httpx


def wait_ready(proc: subprocess.Popen, base_url: str, what: str = "server", timeout_s: float = 180) -> None:
    """Return once GET /readyz answers 200; raise if the process exits or the time runs out (killing it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited during start-up")
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{what} not ready within {timeout_s:g} s")
