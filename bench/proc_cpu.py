"""CPU seconds of a serving process, per thread, read from /proc (Linux): the server's own cost of a
run, whatever else shares the cores (a load client, other jobs)."""

from __future__ import annotations

import os

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended between listing and reading
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def server_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of the server and its worker processes, keyed 'pid/tid'."""
    pids = [pid]
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as fh:
            pids += [int(c) for c in fh.read().split()]
    out = {}
    for p in pids:
        try:
            out.update({f"{p}/{tid}": s for tid, s in thread_cpu(p).items()})
        except FileNotFoundError:
            continue
    return out


def is_event_loop(key: str) -> bool:
    """Whether a 'pid/tid' key is a process's main thread: the one running uvicorn's event loop."""
    pid, tid = key.split("/")
    return pid == tid
