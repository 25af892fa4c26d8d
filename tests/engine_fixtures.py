"""Real Redis, PostgreSQL and nginx servers for the scale-out tests and bench/scaleout.py.

Each runs from its Debian package on 127.0.0.1 (a free port, files in a temporary folder), is
started by a context manager and always stopped by it. `make test` installs the packages when
missing (Makefile target `engines`); a test that finds one absent fails under CI and skips, loudly,
elsewhere. PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user the
Debian package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NGINX_CONF = REPO / "deploy" / "nginx" / "saring.conf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_binary(path: str | None, package: str) -> str:
    """The binary's path, or a loud skip (a failure under CI, which must run these tests)."""
    if path and os.access(path, os.X_OK):
        return path
    import pytest

    reason = f"{package} is not installed (Debian package {package!r}; `make test` installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the scale-out tests")
    pytest.skip(reason)


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on 127.0.0.1:{port} within {timeout_s} s")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, group: bool = False) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)


# -- Redis ------------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    port: int
    folder: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = require_binary(shutil.which("redis-server"), "redis-server")
        args = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.folder), "--protected-mode", "yes"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, "redis-server")

    def kill(self) -> None:
        """SIGKILL: Redis gone at once, as in a crash."""
        if self.proc is not None:
            stop(self.proc, signal.SIGKILL)

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="saring-redis-") as folder:
        server = RedisServer(free_port(), Path(folder))
        server.start()
        try:
            yield server
        finally:
            server.kill()


# -- PostgreSQL -------------------------------------------------------------------------------------


def postgres_bindir() -> str | None:
    """Debian keeps the server binaries under /usr/lib/postgresql/<version>/bin (not on PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return str(Path(found[-1]).parent)
    initdb = shutil.which("initdb")
    return str(Path(initdb).resolve().parent) if initdb else None


def _as_postgres_user() -> tuple[int, int] | None:
    """(uid, gid) to run the server as when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam("postgres")
    return user.pw_uid, user.pw_gid


@dataclass
class PostgresServer:
    port: int
    data: Path
    bindir: str
    log: Path
    proc: subprocess.Popen | None = None
    database: str = "saring"
    ids: tuple[int, int] | None = field(default_factory=_as_postgres_user)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://saring@127.0.0.1:{self.port}/{self.database}"

    def _run(self, args: list[str], **kwargs) -> subprocess.Popen:
        def demote() -> None:
            if self.ids is not None:
                os.setgid(self.ids[1])
                os.setuid(self.ids[0])

        return subprocess.Popen(args, preexec_fn=demote, **kwargs)  # noqa: PLW1509 (no threads yet in the child)

    def init(self) -> None:
        if self.ids is not None:
            os.chown(self.data, *self.ids)
        # --no-sync: only initdb's own files skip fsync; the server runs with fsync on (the durability tests).
        args = [f"{self.bindir}/initdb", "-D", str(self.data), "-U", "saring", "--auth=trust", "-E", "UTF8"]
        args.append("--no-sync")
        proc = self._run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed: {err.decode(errors='replace')}")

    def start(self) -> None:
        args = [f"{self.bindir}/postgres", "-D", str(self.data), "-p", str(self.port), "-k", str(self.data)]
        args += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on", "-c", "synchronous_commit=on"]
        with self.log.open("ab") as log:
            # Its own process group: kill() takes the postmaster and every backend at once, like a crash.
            self.proc = self._run(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, self.proc, f"postgres (log: {self.log})", timeout_s=60)
        self._wait_accepting()

    def _wait_accepting(self) -> None:
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user="saring", dbname="postgres") as conn:
                    conn.execute("select 1")
                    return
            except psycopg.OperationalError:  # "the database system is starting up" (recovery after a kill)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="saring", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f"create database {self.database}")

    def kill(self) -> None:
        """SIGKILL to the postmaster and all its backends: no shutdown checkpoint, nothing flushed."""
        if self.proc is not None:
            stop(self.proc, signal.SIGKILL, group=True)

    def count(self, sql: str) -> int:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="saring", dbname=self.database) as conn:
            return conn.execute(sql).fetchone()[0]


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bindir = require_binary(postgres_bindir() and f"{postgres_bindir()}/postgres", "postgresql")
    # Directly under /tmp: pytest's own temporary folders are private to root, and the server may not be root.
    folder = Path(tempfile.mkdtemp(prefix="saring-pg-"))
    try:
        server = PostgresServer(free_port(), folder / "data", str(Path(bindir).parent), folder / "postgres.log")
        server.data.mkdir()
        if server.ids is not None:
            os.chown(folder, *server.ids)
        server.init()
        server.start()
        server.create_database()
        try:
            yield server
        finally:
            server.kill()  # the cluster is thrown away: no shutdown checkpoint to wait for
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- nginx ------------------------------------------------------------------------------------------

# The shipped config (deploy/nginx/saring.conf) with only its addresses replaced: what is tested is
# what is deployed.
UPSTREAM_LINE = "    server api:8000 max_fails=1 fail_timeout=10s;\n"
LISTEN_LINE = "    listen 8080;\n"


def nginx_site(upstream_ports: list[int], listen_port: int) -> str:
    text = NGINX_CONF.read_text(encoding="utf-8")
    assert text.count(UPSTREAM_LINE) == 1 and text.count(LISTEN_LINE) == 1, "deploy/nginx/saring.conf changed shape"
    servers = "".join(UPSTREAM_LINE.replace("api:8000", f"127.0.0.1:{p}") for p in upstream_ports)
    return text.replace(UPSTREAM_LINE, servers).replace(LISTEN_LINE, f"    listen 127.0.0.1:{listen_port};\n")


@dataclass
class NginxServer:
    port: int
    folder: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def nginx_server(upstream_ports: list[int]) -> Iterator[NginxServer]:
    binary = require_binary(shutil.which("nginx") or "/usr/sbin/nginx", "nginx")
    with tempfile.TemporaryDirectory(prefix="saring-nginx-") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o755)  # nginx workers (nobody when started as root) write their temp files here
        server = NginxServer(free_port(), folder)
        (folder / "saring.conf").write_text(nginx_site(upstream_ports, server.port), encoding="utf-8")
        temp_paths = "".join(
            f"    {name}_temp_path {folder}/{name};\n" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (folder / "nginx.conf").write_text(
            "daemon off;\n"
            "worker_processes 1;\n"
            f"pid {folder}/nginx.pid;\n"
            f"error_log {folder}/error.log info;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            f"    access_log {folder}/access.log;\n"
            f"{temp_paths}"
            f"    include {folder}/saring.conf;\n"
            "}\n",
            encoding="utf-8",
        )
        proc = subprocess.Popen(
            [binary, "-p", str(folder), "-c", str(folder / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        server.proc = proc
        try:
            wait_for_port(server.port, proc, f"nginx ({server.error_log()})")
            yield server
        finally:
            stop(proc, signal.SIGQUIT)  # graceful stop
