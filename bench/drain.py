"""Connection resets at shutdown: requests sent on idle keep-alive connections just after SIGTERM.

`python -m bench.drain [--runs 20] [--contrast-runs 5] [--model DIR]` starts `python -m service` on
127.0.0.1 once per run, opens 8 keep-alive connections and uses each once (they sit idle, as in a
proxy's pool), sends SIGTERM, then sends one more call on each connection at 0, 1/8, ..., 7/8 s after
the signal. Each call ends answered (a status) or reset (the connection closed under it, no status).
Runs use the default SARING_DRAIN_S; the contrast runs use SARING_DRAIN_S=0 (shutdown at once, the
behaviour before draining). Bounded: 8 calls per run, 10 s per call. Writes bench/results/drain.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests", ROOT / "tests" / "fixtures"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from service_fixtures import ADUAN, running_server  # noqa: E402

from bench.report import write_results  # noqa: E402
from bench.scaleout import ensure_model  # noqa: E402
from service.settings import default_of  # noqa: E402

CONNECTIONS = 8
BODY = json.dumps({"messages": [{"text": ADUAN}]})


def call(conn: http.client.HTTPConnection) -> str:
    """'200' (or another status), or the name of the error when the connection broke without one."""
    try:
        conn.request("POST", "/v1/score", body=BODY, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return str(response.status)
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__


def one_run(model: Path, logs: Path, drain_s: float | None) -> dict:
    env = {} if drain_s is None else {"drain_s": str(drain_s)}
    with running_server(model, logs, num_threads="1", **env) as server:
        pool = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=10) for _ in range(CONNECTIONS)]
        assert all(call(conn) == "200" for conn in pool)
        signalled = time.monotonic()
        server.terminate()
        outcomes = []
        for i, conn in enumerate(pool):
            wait = signalled + i / CONNECTIONS - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            outcomes.append(call(conn))
            conn.close()
        server.proc.wait(timeout=60)
    return {"outcomes": outcomes, "resets": sum(not o.isdigit() for o in outcomes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--contrast-runs", type=int, default=5)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "drain.json")
    args = parser.parse_args(argv)
    model = ensure_model(args.model)
    logs = Path(tempfile.mkdtemp(prefix="saring-drain-"))
    result: dict = {"load_average_at_start": os.getloadavg(), "connections_per_run": CONNECTIONS}
    for name, drain_s, runs in (
        (f"drain_s_{default_of('drain_s')}_default", None, args.runs),
        ("drain_s_0", 0.0, args.contrast_runs),
    ):
        results = [one_run(model, logs, drain_s) for _ in range(runs)]
        outcomes: dict[str, int] = {}
        for r in results:
            for o in r["outcomes"]:
                outcomes[o] = outcomes.get(o, 0) + 1
        result[name] = {
            "runs": runs,
            "calls": runs * CONNECTIONS,
            "runs_with_a_reset": sum(r["resets"] > 0 for r in results),
            "resets": sum(r["resets"] for r in results),
            "outcomes": outcomes,
        }
    result["load_average_at_end"] = os.getloadavg()
    write_results(result, args.output, show=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
