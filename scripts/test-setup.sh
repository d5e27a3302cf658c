#!/usr/bin/env bash
# Make this machine ready for `make test`: Chromium for the browser tests, and the local
# PostgreSQL and Redis the suite defaults to, started when installed but not running.
# Installs with apt-get only when allowed (root, or passwordless sudo); otherwise it stops with
# one line that says exactly what to run. Safe to run again: it does nothing when all is ready.
set -euo pipefail
cd "$(dirname "$0")/.."

# Where Debian's chromium package puts the browser (tests/test_test_setup.py points it elsewhere).
DEBIAN_CHROMIUM="${DEBIAN_CHROMIUM:-/usr/bin/chromium}"
CHROMIUM="${PLAYWRIGHT_CHROMIUM:-$DEBIAN_CHROMIUM}"
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/partnerhub}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/15}"

say() { printf 'test-setup: %s\n' "$*" >&2; }
stop() { printf 'make test: %s\n' "$*" >&2; exit 1; }

# May we install and start system services? As root, or with passwordless sudo.
as_root=""
if [ "$(id -u)" -eq 0 ]; then
  as_root="direct"
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root="sudo"
fi
root() { if [ "$as_root" = "sudo" ]; then sudo -n "$@"; else "$@"; fi; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  say "installing $* with apt-get"
  root apt-get install -y --no-install-recommends "$@" >/dev/null \
    || { root apt-get update >/dev/null && root apt-get install -y --no-install-recommends "$@" >/dev/null; }
}

# --- Packages: Chromium (browser tests), make and python3-venv (the Makefile itself) ---------
need=()
wants_browser=1
case " ${PYTEST_ARGS:-} " in *"not browser"*) wants_browser=0 ;; esac
if [ "$wants_browser" = 1 ] && [ ! -x "$CHROMIUM" ]; then
  if [ -n "${PLAYWRIGHT_CHROMIUM:-}" ]; then
    stop "PLAYWRIGHT_CHROMIUM=$CHROMIUM is not an executable; point it at Chromium or unset it."
  fi
  need+=(chromium)
fi
command -v make >/dev/null 2>&1 || need+=(make)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ -n "$as_root" ] && command -v apt-get >/dev/null 2>&1; then
    apt_install "${need[@]}"
  else
    stop "missing ${need[*]}: run 'sudo apt-get install ${need[*]}' (or skip the browser tests with make test PYTEST_ARGS='-m \"not browser\"')."
  fi
fi

# --- Services: only the local ones; a remote DATABASE_URL / REDIS_URL is the reader's own ------
is_local() { case "$1" in *@127.0.0.1[:/]*|*@localhost[:/]*|*://127.0.0.1[:/]*|*://localhost[:/]*) return 0 ;; *) return 1 ;; esac; }
port_of() { local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; case "$rest" in *:*) echo "${rest##*:}" ;; *) echo "$2" ;; esac; }

if is_local "$DATABASE_URL"; then
  pg_port="$(port_of "$DATABASE_URL" 5432)"
  if ! pg_isready -h 127.0.0.1 -p "$pg_port" -q 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
      [ -n "$as_root" ] || stop "PostgreSQL is installed but not running: run 'sudo pg_ctlcluster $(ls /etc/postgresql | sort -V | tail -n1) main start'."
      version="$(ls /etc/postgresql | sort -V | tail -n1)"
      say "starting PostgreSQL $version"
      root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
      for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p "$pg_port" -q 2>/dev/null && break; sleep 1; done
    fi
    pg_isready -h 127.0.0.1 -p "$pg_port" -q 2>/dev/null \
      || stop "no PostgreSQL on 127.0.0.1:$pg_port: run 'sudo apt-get install postgresql' (then make test again), or set DATABASE_URL."
  fi
fi

if is_local "$REDIS_URL"; then
  redis_port="$(port_of "$REDIS_URL" 6379)"
  if ! (command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1); then
    command -v redis-server >/dev/null 2>&1 \
      || stop "no Redis on 127.0.0.1:$redis_port: run 'sudo apt-get install redis-server' (then make test again), or set REDIS_URL."
    say "starting Redis on 127.0.0.1:$redis_port"
    mkdir -p var/redis
    redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" \
      --appendonly no --dir "$PWD/var/redis" --logfile "$PWD/var/redis/redis.log"
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 1; done
    redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1 \
      || stop "Redis did not start: see var/redis/redis.log."
  fi
fi
