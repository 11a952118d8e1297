#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis that the test suite talks to are reachable on this machine,
# then runs the command given after `--` (if any) with TEST_POSTGRES_URL set to the PostgreSQL
# it chose:  ./scripts/ensure-services.sh -- .venv/bin/python -m pytest -q
#
# It never edits the configuration of a PostgreSQL cluster it did not create: on a shared
# machine, rewriting pg_hba.conf would silently change who may log in to everyone's databases.
# PostgreSQL, the first of these that applies:
#   1. TEST_POSTGRES_URL is set: used as given; nothing is installed, started or created.
#   2. A server on 127.0.0.1:5432 lets the user "postgres" in without a password (CI machines and
#      dev containers set up so): used as it is. An installed "main" cluster that is stopped is
#      started first; starting it changes none of its settings.
#   3. Otherwise (PostgreSQL missing, or a server that wants a password), or when
#      G2P_TEST_DEDICATED_POSTGRES=1: the suite's own cluster "g2p_test", created here on the
#      first run (PostgreSQL installed from Debian's packages if missing) with initdb's password
#      authentication on loopback, and a role "g2p_test" (CREATEDB, not a superuser) whose random
#      password is kept, readable only by you, in $STATE_FILE. Remove it all with
#        pg_dropcluster --stop VERSION g2p_test; rm "$STATE_FILE"
# Redis: started on 127.0.0.1:6379 (installed if missing) when nothing answers there.
# Chromium: installed from Debian's packages when /usr/bin/chromium is missing.
# OpenSSH: Debian's openssh-server installed when /usr/sbin/sshd is missing; nothing is started
#   or configured system-wide (the SFTP channel's tests run their own sshd on a free loopback
#   port, with a configuration, host key and authorized key of their own).
set -euo pipefail

STATE_HOME=${XDG_STATE_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.local/state}
STATE_FILE=${G2P_TEST_STATE_FILE:-$STATE_HOME/g2p-bridge/test-postgres.env}
TEST_CLUSTER=g2p_test
TEST_ROLE=g2p_test

if [ "${1:-}" = "--" ]; then shift; elif [ $# -gt 0 ]; then
  echo "usage: $0 [-- COMMAND...]" >&2
  exit 2
fi

say() { echo "ensure-services: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# From /, which the postgres user can always enter (not so the caller's home directory).
as_postgres() (
  cd /
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
)
apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}
server_version() { ls /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1 | cut -d/ -f5; }
# Whether a cluster of this machine's newest server version with that name exists.
cluster_exists() { [ -n "$(server_version)" ] && [ -d "/etc/postgresql/$(server_version)/$1" ]; }

# --------------------------------------------------------------------------- PostgreSQL

# The trust server of step 2: succeeds only if no password is asked for (-w never prompts).
default_postgres_works() {
  psql -w -Atq "postgresql://postgres@127.0.0.1:5432/postgres?connect_timeout=3" -c 'SELECT 1' \
    >/dev/null 2>&1
}

# Step 3: create (once), start and log in to the suite's own cluster; sets TEST_POSTGRES_URL.
use_test_cluster() {
  if [ -z "$(server_version)" ]; then
    say "installing PostgreSQL from Debian's packages"
    apt_install postgresql
  fi
  local version port password
  version=$(server_version)
  if ! cluster_exists "$TEST_CLUSTER"; then
    # A free port above 5432 that no other cluster is configured for.
    local taken
    taken=$(pg_lsclusters -h 2>/dev/null | awk '{print $3}')
    for port in $(seq 5433 5499); do
      grep -qx "$port" <<<"$taken" && continue
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
      break
    done
    say "creating PostgreSQL cluster '$TEST_CLUSTER' ($version) on 127.0.0.1:$port for the tests;"
    say "  it asks for a password on loopback (scram-sha-256); no other cluster is touched"
    as_root pg_createcluster --port "$port" "$version" "$TEST_CLUSTER" -- \
      --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  fi
  port=$(pg_conftool -s "$version" "$TEST_CLUSTER" show port)
  if ! pg_isready -q -h 127.0.0.1 -p "$port"; then
    say "starting PostgreSQL cluster '$TEST_CLUSTER' on port $port"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$TEST_CLUSTER" start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 1; done
  fi
  password=
  # shellcheck source=/dev/null
  [ -r "$STATE_FILE" ] && password=$(. "$STATE_FILE" && echo "${TEST_POSTGRES_PASSWORD:-}")
  if [ -z "$password" ] || ! PGPASSWORD=$password psql -w -Atq -h 127.0.0.1 -p "$port" \
      -U "$TEST_ROLE" -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
    # First run, or the password file was lost: (re)set the role's password through the
    # server's own peer login, sent on stdin so that it never shows in a process list.
    password=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    as_postgres psql -q -p "$port" -d postgres -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT 'CREATE ROLE $TEST_ROLE LOGIN CREATEDB'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$TEST_ROLE') \gexec
ALTER ROLE $TEST_ROLE PASSWORD '$password';
SQL
    mkdir -p "$(dirname "$STATE_FILE")"
    (umask 077 && printf 'TEST_POSTGRES_PORT=%s\nTEST_POSTGRES_PASSWORD=%s\n' "$port" "$password" \
      >"$STATE_FILE")
    say "role '$TEST_ROLE' (CREATEDB, no superuser); its password is in $STATE_FILE (mode 600)"
  fi
  TEST_POSTGRES_URL="postgresql+psycopg://$TEST_ROLE:$password@127.0.0.1:$port/postgres"
  say "PostgreSQL: the suite's own cluster, $TEST_ROLE@127.0.0.1:$port"
}

if [ -n "${TEST_POSTGRES_URL:-}" ]; then
  # The caller's server: check that it answers and touch nothing.
  if command -v pg_isready >/dev/null; then
    pg_isready -q -d "${TEST_POSTGRES_URL/+psycopg/}" || {
      say "TEST_POSTGRES_URL does not answer; it is used as given, nothing is started for it"
      exit 1
    }
  fi
  say "PostgreSQL: TEST_POSTGRES_URL as given"
else
  command -v psql >/dev/null || apt_install postgresql-client
  if [ "${G2P_TEST_DEDICATED_POSTGRES:-0}" != 1 ] && ! default_postgres_works \
      && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && cluster_exists main; then
    say "starting the installed PostgreSQL cluster 'main' (its configuration is left as it is)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(server_version)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  if [ "${G2P_TEST_DEDICATED_POSTGRES:-0}" != 1 ] && default_postgres_works; then
    TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    say "PostgreSQL: postgres@127.0.0.1:5432 (no password asked)"
  else
    use_test_cluster
  fi
fi
export TEST_POSTGRES_URL

# --------------------------------------------------------------------------- Redis

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! command -v redis-server >/dev/null; then
  say "installing Redis from Debian's packages"
  apt_install redis-server
fi
if ! redis_up; then
  say "starting Redis on 127.0.0.1:6379 (nothing kept on disk)"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 1 30); do redis_up && break; sleep 1; done
redis_up || { say "Redis is not reachable on 127.0.0.1:6379"; exit 1; }
say "PostgreSQL and Redis are up"

# --------------------------------------------------------------------------- Chromium

# The console's browser tests drive Debian's Chromium through Playwright (never
# `playwright install`, which downloads a browser build of its own).
if [ ! -x /usr/bin/chromium ]; then
  say "installing Chromium from Debian's packages (the console's browser tests)"
  apt_install --no-install-recommends chromium
fi

# --------------------------------------------------------------------------- OpenSSH

# The ISO 20022-over-SFTP channel is tested against Debian's own sshd (tests/bridge/
# test_sftp_openssh.py). Installing the package starts nothing here: there is no init system in
# a container, and the tests start sshd themselves. The package's policy-rc.d-less postinst may
# try to start the service and fail without systemd, which is harmless.
if [ ! -x /usr/sbin/sshd ]; then
  say "installing OpenSSH's server from Debian's packages (the SFTP channel's tests)"
  apt_install --no-install-recommends openssh-server openssh-client || [ -x /usr/sbin/sshd ]
fi
# sshd refuses to start without its privilege-separation directory, which systemd's tmpfiles
# would create on a full system.
[ -d /run/sshd ] || as_root mkdir -p -m 0755 /run/sshd

if [ $# -gt 0 ]; then exec "$@"; fi
