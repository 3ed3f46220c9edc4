"""A private PostgreSQL for the tests: initdb in a temp dir, pg_ctl on a free port.

Rules:
1. One server per test session (initdb ``--no-sync`` costs about 2 s), one fresh
   database per test (``CREATE DATABASE``, milliseconds), so tests never see each
   other's records.
2. The binaries are looked for under ``/usr/lib/postgresql/*/bin`` (Debian's
   ``postgresql`` package puts them there, off PATH), newest first, then on PATH.
   Without them the PostgreSQL tests skip with ``MISSING`` as the reason, and the
   run ends with a loud summary of what was skipped and how to install it
   (tests/conftest.py).
3. PostgreSQL refuses to run as root: when the tests run as root the server runs as
   the ``postgres`` user (``runuser``), in a temp dir it owns.
4. fsync is off: a test server's data never has to survive the machine, and the
   tests stay fast. Commits stay synchronous, so a server stopped with ``-m
   immediate`` (a crash, as far as clients see) still holds every acknowledged one.
5. Only 127.0.0.1 and a socket in the temp dir: nothing else can reach it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .process import free_port

MISSING = ("PostgreSQL is not installed (no initdb/pg_ctl/postgres under "
           "/usr/lib/postgresql/*/bin or on PATH): install it with "
           "`apt-get install postgresql`")
_BINARIES = ("initdb", "pg_ctl", "postgres", "psql")
_START_TIMEOUT = 30


def find_bindir() -> Path | None:
    """Rule 2: the directory holding initdb, pg_ctl and postgres, or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda d: _version(Path(d).parent.name), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(os.path.realpath(on_path)).parent))
    for candidate in candidates:
        if all(os.access(Path(candidate) / name, os.X_OK) for name in _BINARIES):
            return Path(candidate)
    return None


def _version(name: str) -> float:
    try:
        return float(name)
    except ValueError:
        return 0.0


class PgServer:
    """One PostgreSQL cluster in a temp dir; ``start``/``stop`` may be called by tests."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable  # fsync on: what the benchmarks measure (rule 4 is for tests)
        self.root = Path(tempfile.mkdtemp(prefix="obsv-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self._started = False
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._initdb()

    def url(self, database: str = "postgres") -> str:
        """A URL for ``database`` on this server (user ``postgres``, no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = _START_TIMEOUT) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        result = subprocess.run([*prefix, *argv], capture_output=True, text=True,
                                timeout=timeout, cwd=self.root, check=False)
        if result.returncode != 0:
            log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr}"
                               f"{result.stdout}\n{log[-2000:]}")

    def _initdb(self) -> None:
        self._run(str(self.bindir / "initdb"), "--no-sync", "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--locale=C", "-D", str(self.data))

    def start(self) -> None:
        """Start the server and wait until it accepts connections. The first start
        takes another free port if its port was taken meanwhile (other test runs share
        the machine); later starts keep the port, which the tests' URLs name."""
        for attempt in range(1 if self._started else 3):
            options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                       "-c max_connections=200")
            if not self.durable:
                options += " -c fsync=off -c full_page_writes=off"
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                          str(self.logfile), "-o", options, "-w", "-t", str(_START_TIMEOUT),
                          "start")
            except RuntimeError:
                if self._started or attempt == 2 or self.running:
                    raise
                self.port = free_port()
                continue
            self._started = True
            return

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is a crash of the database, as far as clients see)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        """Rule 1: a fresh, empty database; its URL."""
        result = subprocess.run(
            [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"'],
            capture_output=True, text=True, timeout=_START_TIMEOUT, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"CREATE DATABASE {name} failed: {result.stderr}")
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> None:
        """Run ``sql`` as the superuser (roles, grants: what a test sets up by hand)."""
        result = subprocess.run(
            [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", database, "-v", "ON_ERROR_STOP=1", "-qc", sql],
            capture_output=True, text=True, timeout=_START_TIMEOUT, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")

    def require_password(self, role: str) -> None:
        """Make ``role`` log in with its password (SCRAM) over TCP and the socket; every
        other role keeps the trust of rule 5's private server."""
        hba = self.data / "pg_hba.conf"
        lines = (f"host all {role} 127.0.0.1/32 scram-sha-256\n"
                 f"local all {role} scram-sha-256\n")
        hba.write_text(lines + hba.read_text())
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "reload")

    @property
    def running(self) -> bool:
        """Whether the postmaster is up (its pid file is there)."""
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        """Stop it if it runs, and remove every file."""
        if self.running:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
