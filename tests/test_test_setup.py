"""`make test` sets the machine up (issue 17, finding 7): scripts/test-setup.sh installs
Chromium when it may, starts the local services, or stops with one line saying what to run.
The script runs here against stub commands (id, sudo, apt-get, pg_isready, redis-cli), so
nothing on this machine is installed or started."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "test-setup.sh"


@pytest.fixture
def machine(tmp_path):
    """A fake machine: stubs first on PATH; Chromium absent until apt-get 'installs' it."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "apt.log"
    chromium = tmp_path / "usr-bin" / "chromium"

    def stub(name, body):
        path = stubs / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    stub("sudo", "exit 1")  # no passwordless sudo
    stub("apt-get", f'echo "$@" >> {log}\n'
                    f'case "$*" in *install*chromium*) mkdir -p {chromium.parent} && '
                    f'touch {chromium} && chmod +x {chromium};; esac')
    stub("pg_isready", "exit 0")
    stub("redis-cli", "echo PONG")

    class Machine:
        def run(self, uid=1000, **env):
            stub("id", f"echo {uid}")
            clean = {k: v for k, v in os.environ.items()
                     if k not in ("PLAYWRIGHT_CHROMIUM", "PYTEST_ARGS", "DATABASE_URL",
                                  "REDIS_URL")}
            return subprocess.run(
                [str(SCRIPT)], capture_output=True, text=True, timeout=60, cwd=ROOT,
                env={**clean, "PATH": f"{stubs}:/usr/bin:/bin",
                     "DEBIAN_CHROMIUM": str(chromium), **env})

    m = Machine()
    m.stub, m.log, m.chromium = stub, log, chromium
    return m


def test_root_installs_chromium_with_apt_get(machine):
    result = machine.run(uid=0)
    assert result.returncode == 0, result.stderr
    assert "install" in machine.log.read_text() and "chromium" in machine.log.read_text()
    assert machine.chromium.exists()


def test_without_root_or_sudo_it_stops_with_one_line_saying_what_to_run(machine):
    result = machine.run(uid=1000)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "sudo apt-get install chromium" in lines[0]
    assert not machine.log.exists()


def test_nothing_to_do_when_everything_is_there(machine):
    machine.chromium.parent.mkdir()
    machine.chromium.write_text("")
    machine.chromium.chmod(0o755)
    result = machine.run(uid=1000)
    assert (result.returncode, result.stderr) == (0, "")


def test_skipping_the_browser_tests_needs_no_chromium(machine):
    result = machine.run(uid=1000, PYTEST_ARGS='-m "not browser"')
    assert result.returncode == 0, result.stderr


def test_a_stopped_local_postgresql_is_named_with_the_command_that_starts_it(machine):
    machine.chromium.parent.mkdir()
    machine.chromium.write_text("")
    machine.chromium.chmod(0o755)
    machine.stub("pg_isready", "exit 2")
    machine.stub("pg_ctlcluster", "exit 0")
    result = machine.run(uid=1000)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("make test: ") and ("pg_ctlcluster" in line or "postgresql" in line)


def test_a_remote_database_is_left_alone(machine):
    machine.chromium.parent.mkdir()
    machine.chromium.write_text("")
    machine.chromium.chmod(0o755)
    machine.stub("pg_isready", "exit 2")
    result = machine.run(uid=1000, DATABASE_URL="postgres://u:p@db.internal:5432/x")
    assert result.returncode == 0, result.stderr


def test_make_test_runs_the_setup_before_pytest():
    plan = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60).stdout.splitlines()
    setup = next(i for i, line in enumerate(plan) if "scripts/test-setup.sh" in line)
    pytest_run = next(i for i, line in enumerate(plan) if "-m pytest" in line)
    assert setup < pytest_run


def test_ci_is_a_thin_wrapper_around_make_lint_and_make_test():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make lint" in ci and "make test" in ci
    assert "apt-get" not in ci and "pg_ctlcluster" not in ci and "redis-server" not in ci
