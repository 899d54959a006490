#!/usr/bin/env bash
# Test servers for the backend integration tests.
#
#   scripts/servers.sh start   make sure they run (idempotent; quick when already up)
#   scripts/servers.sh stop    stop what `start` started (not the standalone Redis)
#   scripts/servers.sh env     print the export lines the tests read
#
# Servers: standalone Redis on 6379, a 3-master Redis Cluster on 7001-7003
# (data under /tmp/flash-cluster) and two memcached on 11211 and 11212.
# Meant to run as root without a TTY (CI, dev machines).
set -euo pipefail

CLUSTER_DIR=/tmp/flash-cluster
CLUSTER_PORTS=(7001 7002 7003)
MEMCACHED_PORTS=(11211 11212)
HOST=127.0.0.1

log() { echo "servers.sh: $*" >&2; }

# Waits up to ~10 s for a command to succeed.
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log "timed out waiting for $what"
  return 1
}

apt_updated=0
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  apt-get install -y -qq "$@" >/dev/null
}

redis_ping() { redis-cli -h "$HOST" -p "$1" ping 2>/dev/null | grep -q PONG; }

# Runs in a subshell: a failed `exec` redirection would end the whole script.
memcached_ping() (
  # `version` answers "VERSION x.y.z"; bash's /dev/tcp avoids needing nc.
  port=$1 reply=""
  exec 3<>"/dev/tcp/$HOST/$port" || exit 1
  printf 'version\r\n' >&3
  IFS= read -r -t 2 reply <&3 || true
  [[ $reply == VERSION* ]]
) 2>/dev/null

ensure_tools() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    log "installing redis-server"
    apt_install redis-server redis-tools
  fi
  if ! command -v memcached >/dev/null; then
    log "installing memcached"
    apt_install memcached
  fi
}

start_redis() {
  redis_ping 6379 && return 0
  log "starting redis on 6379"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no >/dev/null
  wait_for "redis on 6379" redis_ping 6379
}

cluster_ok() { redis-cli -h "$HOST" -p "${CLUSTER_PORTS[0]}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; }

start_cluster() {
  cluster_ok && return 0
  mkdir -p "$CLUSTER_DIR"
  for port in "${CLUSTER_PORTS[@]}"; do
    if ! redis_ping "$port"; then
      log "starting cluster node on $port"
      redis-server --port "$port" --bind "$HOST" --cluster-enabled yes \
        --cluster-config-file "$CLUSTER_DIR/nodes-$port.conf" \
        --daemonize yes --save '' --appendonly no --dir "$CLUSTER_DIR" \
        --pidfile "$CLUSTER_DIR/redis-$port.pid" --logfile "$CLUSTER_DIR/redis-$port.log" >/dev/null
    fi
  done
  for port in "${CLUSTER_PORTS[@]}"; do wait_for "cluster node $port" redis_ping "$port"; done
  # Create the cluster only when no slot is assigned yet (nodes restarted from
  # their nodes-*.conf come back with their slots and just need a moment).
  local assigned
  assigned=$(redis-cli -h "$HOST" -p "${CLUSTER_PORTS[0]}" cluster info | tr -d '\r' | awk -F: '/cluster_slots_assigned/ {print $2}')
  if [ "${assigned:-0}" = 0 ]; then
    log "creating the cluster"
    local addrs=()
    for port in "${CLUSTER_PORTS[@]}"; do addrs+=("$HOST:$port"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes </dev/null >/dev/null
  fi
  # 30 s: a fresh cluster needs a few gossip rounds before it is ok.
  for _ in $(seq 1 300); do
    if cluster_ok; then return 0; fi
    sleep 0.1
  done
  log "cluster did not reach cluster_state:ok"
  return 1
}

start_memcached() {
  for port in "${MEMCACHED_PORTS[@]}"; do
    memcached_ping "$port" && continue
    log "starting memcached on $port"
    memcached -d -u root -l "$HOST" -p "$port" -m 64 -P "/tmp/flash-memcached-$port.pid"
    wait_for "memcached on $port" memcached_ping "$port"
  done
}

stop_all() {
  for port in "${CLUSTER_PORTS[@]}"; do
    redis-cli -h "$HOST" -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  rm -rf "$CLUSTER_DIR"
  for port in "${MEMCACHED_PORTS[@]}"; do
    local pidfile="/tmp/flash-memcached-$port.pid"
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
}

print_env() {
  echo "export FLASH_TEST_REDIS_URL=redis://127.0.0.1:6379/0"
  echo "export FLASH_TEST_REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
  echo "export FLASH_TEST_MEMCACHE_URL=memcache://127.0.0.1:11211,127.0.0.1:11212"
}

case "${1:-}" in
  start)
    ensure_tools
    start_redis
    start_cluster
    start_memcached
    log "all servers up"
    ;;
  stop) stop_all ;;
  env) print_env ;;
  *)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
