"""A throw-away PostgreSQL cluster for the tests: initdb in a temp dir, pg_ctl on a free 127.0.0.1 port.

Usage (the ``postgresql_server`` fixture in ``tests/core/conftest.py`` does this once per session)::

    cluster = PostgresCluster.start()           # raises ClusterUnavailable when the binaries are absent
    url = cluster.create_database()             # postgresql+psycopg://postgres@127.0.0.1:PORT/t_<hex>
    cluster.stop()                              # stops the server and deletes the temp dir

By hand, e.g. for ``python -m core.reviews stress``: ``python -m tests.postgres_cluster`` starts a
cluster with PostgreSQL's default durability (fsync on), prints a database URL and keeps the server up
until Enter is pressed.

PostgreSQL refuses to run as root, and the tests run as root in CI: as root, initdb and pg_ctl run as
the ``postgres`` system user (created by Debian's ``postgresql`` package) through ``runuser``, and the
temp dir is handed to that user. pg_hba.conf trusts ``postgres`` on 127.0.0.1 and asks every other
role for a SCRAM password, so the tests can provoke a real authentication failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("initdb", "pg_ctl")
SUPERUSER = "postgres"
PASSWORD_ROLE = "chest_pw"  # a role that must log in with PASSWORD_ROLE_SECRET
PASSWORD_ROLE_SECRET = "right-secret-4711"

PG_HBA = f"""\
local all all trust
host all {SUPERUSER} 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
"""


class ClusterUnavailable(RuntimeError):
    """PostgreSQL cannot run on this machine at all (no server binaries, or root without a postgres user)."""


def server_bin_dir() -> Path:
    """The folder of initdb / pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    on_path = [shutil.which(name) for name in BINARIES]
    if all(on_path):
        return Path(os.path.realpath(on_path[0])).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name.split(".")[0]), reverse=True
    )
    for folder in candidates:
        if all((Path(folder) / name).is_file() for name in BINARIES):
            return Path(folder)
    raise ClusterUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found; install Debian's 'postgresql' package "
        "(bash scripts/test.sh does)."
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresCluster:
    root: Path
    bin_dir: Path
    port: int
    run_as: str | None  # the system user the server runs as (None: the current user)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        login = user if password is None else f"{user}:{password}"
        return f"postgresql+psycopg://{login}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls, *, durable: bool = False, attempts: int = 3) -> PostgresCluster:
        """initdb + pg_ctl start. ``durable=False`` turns fsync off (a throw-away test cluster)."""
        bin_dir = server_bin_dir()
        run_as = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise ClusterUnavailable(
                    f"running as root and there is no '{SUPERUSER}' system user to run the PostgreSQL server as"
                ) from None
            run_as = SUPERUSER
        # Not under pytest's basetemp: /tmp/pytest-of-root is 0700, the postgres user could not enter it.
        root = Path(tempfile.mkdtemp(prefix="chest-review-pg-"))
        try:
            (root / "socket").mkdir()
            if run_as:
                user = pwd.getpwnam(run_as)
                for path in (root, root / "socket"):
                    os.chown(path, user.pw_uid, user.pw_gid)
            cluster = cls(root=root, bin_dir=bin_dir, port=0, run_as=run_as)
            cluster._run(
                "initdb", "-D", str(cluster.data_dir), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                "--locale=C", "--no-instructions",
            )
            (cluster.data_dir / "pg_hba.conf").write_text(PG_HBA)
            for attempt in range(attempts):  # the free port may be taken between probe and start
                cluster.port = free_port()
                try:
                    cluster._pg_ctl_start(durable)
                    break
                except subprocess.CalledProcessError:
                    if attempt == attempts - 1:
                        raise
            cluster._create_password_role()
            return cluster
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    def _run(self, binary: str, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / binary), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        try:
            return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
        except subprocess.CalledProcessError as error:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.is_file() else ""
            raise subprocess.CalledProcessError(
                error.returncode, error.cmd, error.stdout, f"{error.stderr}\n--- server.log ---\n{tail}"
            ) from None

    def _pg_ctl_start(self, durable: bool) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c max_connections=100"
        if not durable:
            options += " -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", options, "start")

    def _admin(self):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True)

    def _create_password_role(self) -> None:
        with self._admin() as conn:
            conn.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD_ROLE_SECRET}'")

    def create_database(self, name: str | None = None, owner: str = SUPERUSER) -> str:
        """A new empty database; returns its SQLAlchemy URL (as ``postgres``)."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {owner}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def main() -> None:
    cluster = PostgresCluster.start(durable=True)
    try:
        print(cluster.create_database("reviews"), flush=True)
        input("PostgreSQL is running; press Enter to stop it and delete its files.\n")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
