#!/usr/bin/env bash
# The whole test suite.
#
#   1. every crate's tests on the embedded default (SQLite + in-process cache),
#      including the backend conformance, outage and large-value tests against
#      real Redis, Redis Cluster and memcached servers;
#   2. the seed, consistency and miss-path suites on PostgreSQL and MySQL, with each cache
#      (in-process, Redis, Redis Cluster, memcached);
#   3. the demo on SQLite + in-process, PostgreSQL + Redis, MySQL + memcached;
#   4. the consistency stress test (several processes, faults, the near tier, the lease-less
#      variant that must find stale entries);
#   5. a CI-sized benchmark run, so that the benchmark never rots.
#
# Servers it needs are started by scripts/servers.sh (memcached is installed
# when missing). With FLASH_REQUIRE_SERVERS set, a missing server is a failure;
# without it, steps that need one are skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL=${FLASH_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
MYSQL_URL=${FLASH_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}

step() { printf '\n=== %s\n' "$*"; }
need() {
  if [ -n "${FLASH_REQUIRE_SERVERS:-}" ]; then
    echo "required server missing: $*" >&2
    exit 1
  fi
  echo "skipping: $* (set FLASH_REQUIRE_SERVERS to make this an error)"
}

step "servers"
bash scripts/servers.sh start
eval "$(bash scripts/servers.sh env)"
have_pg=1 have_mysql=1
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql 2>/dev/null | head -1)" main start 2>/dev/null || true
  sleep 2
  pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || { have_pg=0; need "PostgreSQL on 127.0.0.1:5432"; }
fi
if ! mysqladmin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd 2>/dev/null || true
  sleep 3
  mysqladmin -h 127.0.0.1 -u root ping >/dev/null 2>&1 || { have_mysql=0; need "MySQL/MariaDB on 127.0.0.1:3306"; }
fi

step "clean up namespaces left by earlier runs"
if [ "$have_pg" = 1 ]; then
  for ns in $(psql -h 127.0.0.1 -U postgres -d test -Atc "SELECT nspname FROM pg_namespace WHERE nspname ~ '^flash_(t|stress_|bench_)'" 2>/dev/null); do
    psql -h 127.0.0.1 -U postgres -d test -qc "DROP SCHEMA IF EXISTS $ns CASCADE" >/dev/null 2>&1 || true
  done
fi
if [ "$have_mysql" = 1 ]; then
  for ns in $(mysql -h 127.0.0.1 -u root -N -e "SHOW DATABASES" 2>/dev/null | grep -E '^flash_(t|stress_|bench_)'); do
    mysql -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS $ns" >/dev/null 2>&1 || true
  done
fi
rm -f "${TMPDIR:-/tmp}"/flash_t*.db* "${TMPDIR:-/tmp}"/flash_cli*.db* 2>/dev/null || true

step "workspace tests on SQLite + in-process"
env -u DATABASE_URL -u FLASH_CACHE_URL cargo test --workspace
# The example service's HTTP test ran above on Redis (FLASH_TEST_REDIS_URL); once more on memcached.
FLASH_CACHE_URL=$FLASH_TEST_MEMCACHE_URL cargo test -p flash-example-axum --test http

caches=("memory://" "$FLASH_TEST_REDIS_URL" "$FLASH_TEST_REDIS_CLUSTER_URL" "$FLASH_TEST_MEMCACHE_URL")
dbs=()
[ "$have_pg" = 1 ] && dbs+=("$PG_URL")
[ "$have_mysql" = 1 ] && dbs+=("$MYSQL_URL")
for db in "" "${dbs[@]}"; do
  for cache in "${caches[@]}"; do
    [ -z "$db" ] && [ "$cache" = "memory://" ] && continue # done above
    step "seed + consistency suites: DATABASE_URL=${db:-sqlite (default)} FLASH_CACHE_URL=$cache"
    if [ -n "$db" ]; then export DATABASE_URL=$db; else unset DATABASE_URL; fi
    FLASH_CACHE_URL=$cache cargo test -p flash-cache --test seed --test consistency --test compat --test capture --test capture_own --test relations --test names --test entries --test miss_path
    FLASH_CACHE_URL=$cache cargo test -p flash-cli --test stress --test ops
  done
done
unset DATABASE_URL

step "demo"
cargo build --release --bin flash
# (Not `cmd && echo`: under `set -e` a failure there would not stop the script.)
env -u DATABASE_URL -u FLASH_CACHE_URL ./target/release/flash demo >/dev/null
echo "demo: SQLite + in-process ok"
if [ "$have_pg" = 1 ]; then
  DATABASE_URL=$PG_URL FLASH_CACHE_URL=$FLASH_TEST_REDIS_URL ./target/release/flash demo >/dev/null
  echo "demo: PostgreSQL + Redis ok"
fi
if [ "$have_mysql" = 1 ]; then
  DATABASE_URL=$MYSQL_URL FLASH_CACHE_URL=$FLASH_TEST_MEMCACHE_URL ./target/release/flash demo >/dev/null
  echo "demo: MySQL + memcached ok"
fi

step "stress"
env -u DATABASE_URL -u FLASH_CACHE_URL ./target/release/flash stress --quick
if [ "$have_pg" = 1 ]; then
  export DATABASE_URL=$PG_URL
  # The full run: 120 000 operations, two processes, both faults.
  FLASH_CACHE_URL=$FLASH_TEST_REDIS_URL ./target/release/flash stress --kill-writer --kill-cache
  FLASH_CACHE_URL=$FLASH_TEST_MEMCACHE_URL ./target/release/flash stress --quick --kill-cache --kill-writer
  FLASH_CACHE_URL=$FLASH_TEST_REDIS_CLUSTER_URL ./target/release/flash stress --quick
  FLASH_CACHE_URL=$FLASH_TEST_REDIS_URL ./target/release/flash stress --quick --no-leases --no-capture --foreign-writers 0 --expect-stale 2>/dev/null
  # The near tier on in every process (Redis pub/sub; memcached: PostgreSQL
  # LISTEN/NOTIFY), both faults.
  FLASH_CACHE_URL=$FLASH_TEST_REDIS_URL ./target/release/flash stress --quick --near --kill-cache --kill-writer
  FLASH_CACHE_URL=$FLASH_TEST_MEMCACHE_URL ./target/release/flash stress --quick --near --kill-cache --kill-writer
  # Foreign writers with capture off: raw writes must be found stale.
  FLASH_CACHE_URL=$FLASH_TEST_REDIS_URL ./target/release/flash stress --quick --no-capture --expect-stale 2>/dev/null
  # One process cut off from the cache at times (a paused proxy): the others
  # see its writes within the bound; without capture they do not.
  FLASH_CACHE_URL=$FLASH_TEST_REDIS_URL ./target/release/flash stress --quick --partition 2>/dev/null
  FLASH_CACHE_URL=$FLASH_TEST_MEMCACHE_URL ./target/release/flash stress --quick --partition 2>/dev/null
  FLASH_CACHE_URL=$FLASH_TEST_MEMCACHE_URL ./target/release/flash stress --quick --partition --cut-ms 3500 \
    --no-capture --foreign-writers 0 --expect-stale 2>/dev/null
  unset DATABASE_URL
fi
if [ "$have_mysql" = 1 ]; then
  DATABASE_URL=$MYSQL_URL FLASH_CACHE_URL=$FLASH_TEST_MEMCACHE_URL ./target/release/flash stress --quick --kill-cache --kill-writer
  DATABASE_URL=$MYSQL_URL FLASH_CACHE_URL=$FLASH_TEST_REDIS_URL ./target/release/flash stress --quick --partition 2>/dev/null
fi

step "benchmark (CI-sized)"
./target/release/flash bench --quick

step "all tests passed"
