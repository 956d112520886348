"""A throwaway PostgreSQL server for the history tests: its own cluster in a temporary
folder, on a free port and a private socket folder, run by an unprivileged user when the
tests run as root (CI does; initdb refuses root). ``server()`` yields a URL maker, or raises
``Unavailable`` with the reason."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_S = 30


class Unavailable(RuntimeError):
    pass


def _bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if not candidates:
        raise Unavailable("PostgreSQL is not installed (no pg_ctl on PATH or under "
                          "/usr/lib/postgresql/*/bin; apt-get install postgresql)")
    return Path(candidates[0]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", user, "--"]
    raise Unavailable("running as root without a 'postgres' or 'nobody' user and runuser: "
                      "initdb refuses root")


@contextmanager
def server():
    """Start a cluster; yield ``url(dbname)`` that creates that database and returns its
    SQLAlchemy URL; stop and delete the cluster afterwards."""
    try:
        import psycopg
    except ImportError as exc:
        raise Unavailable(f"psycopg is not installed ({exc})") from None
    bindir, prefix = _bindir(), _as_user()
    root = Path(tempfile.mkdtemp(prefix="infergate-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if prefix:
        user = prefix[2]
        shutil.chown(root, user)
        shutil.chown(sock, user)
    port = _free_port()

    def run(*cmd, timeout=START_TIMEOUT_S):
        done = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout,
                              cwd=root, check=False)
        if done.returncode:
            raise Unavailable(f"{Path(cmd[0]).name} failed: {done.stderr.strip()[-500:]}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
            f"-p {port} -k {sock} -c listen_addresses='' -c fsync=off", "start")
    except (Unavailable, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(f"could not start a PostgreSQL server: {exc}") from None

    def url(dbname: str) -> str:
        with psycopg.connect(host=str(sock), port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return f"postgresql+psycopg://postgres@/{dbname}?host={sock}&port={port}"

    try:
        yield url
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=START_TIMEOUT_S, cwd=root,
                       check=False)
        shutil.rmtree(root, ignore_errors=True)
