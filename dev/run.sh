#!/usr/bin/env bash
# `make run`: Redis (the one on $REDIS_URL if it answers, else a local redis-server with
# AOF under .data/), contacts-svc and edge with dev/edge.toml. Prints a command that
# sends a correctly signed sample webhook and one that shows the resulting contact.
# `make run CLUSTER=1` (CLUSTER=1 here) starts a local Redis Cluster instead: 3 masters
# and 3 replicas on ports 7001-7006, data under .data/cluster/, and contacts-svc on it
# waiting for one replica per write. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
dev/tools.sh redis-server grpcurl curl standardwebhooks

redis_url=${REDIS_URL:-redis://127.0.0.1:6379/0}
hostport=${redis_url#*://}; hostport=${hostport#*@}; hostport=${hostport%%/*}
redis_host=${hostport%:*}; redis_port=${hostport##*:}
[ "$redis_port" = "$hostport" ] && redis_port=6379

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping…"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

redis_answers() {
  python3 - "$redis_host" "$redis_port" <<'PY'
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(64).startswith((b"+PONG", b"-NOAUTH")) else 1)
except OSError:
    sys.exit(1)
PY
}

wait_for() { # what, command…
  local what=$1; shift
  for _ in $(seq 1 100); do "$@" && return 0; sleep 0.1; done
  echo "$what did not come up" >&2; exit 1
}

cluster_ports=(7001 7002 7003 7004 7005 7006)
node_answers() { redis-cli -p "$1" ping >/dev/null 2>&1; }
cluster_ok() { redis-cli -p 7001 cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

if [ "${CLUSTER:-}" = 1 ]; then
  # Nodes started before keep their nodes.conf and form the same cluster again.
  formed=0
  [ -f .data/cluster/7001/nodes.conf ] && formed=1
  for port in "${cluster_ports[@]}"; do
    if node_answers "$port"; then
      echo "port $port is taken: make run CLUSTER=1 starts its own nodes on 7001-7006" >&2
      exit 1
    fi
    mkdir -p ".data/cluster/$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/.data/cluster/$port" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
      --appendonly yes --appendfsync everysec --save "" \
      --logfile "$PWD/.data/cluster/$port/redis.log" &
    pids+=($!)
    wait_for "redis-server on $port" node_answers "$port"
  done
  if [ "$formed" = 0 ]; then
    echo "creating the cluster (3 masters, 3 replicas)"
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster_ports[@]}") \
      --cluster-replicas 1 --cluster-yes >/dev/null
  fi
  wait_for "the cluster" cluster_ok
  redis_args=(--redis-cluster "$(printf 'redis://127.0.0.1:%s,' "${cluster_ports[@]}" | sed 's/,$//')"
    --redis-wait-replicas 1)
  echo "Redis Cluster on 127.0.0.1:7001-7006 (data in .data/cluster)"
elif redis_answers; then
  echo "using the Redis on $redis_host:$redis_port"
else
  mkdir -p .data/redis
  echo "starting redis-server on $redis_port (AOF, fsync always) in .data/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$PWD/.data/redis" \
    --appendonly yes --appendfsync always --save "" --logfile "$PWD/.data/redis/redis.log" &
  pids+=($!)
  wait_for "redis-server" redis_answers
fi
if [ "${CLUSTER:-}" != 1 ]; then
  redis_args=(--redis-url "$redis_url")
fi

cargo build --quiet --bins
# Development only: no tokens (README, "Authentication").
target/debug/contacts-svc --listen 127.0.0.1:50051 "${redis_args[@]}" --insecure-no-auth &
contacts_pid=$!
pids+=("$contacts_pid")
target/debug/edge --config dev/edge.toml &
edge_pid=$!
pids+=("$edge_pid")
# Ready means these two processes run and the edge answers: another edge left on the
# port would answer too.
ours_ready() {
  for pid in "$contacts_pid" "$edge_pid"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a service exited at start (is port 8080, 8081, 8082 or 50051 taken?)" >&2
      exit 1
    fi
  done
  curl -sf -o /dev/null http://127.0.0.1:8080/readyz
}
wait_for "the edge" ours_ready

cat <<TXT

hookline is up: edge on http://127.0.0.1:8080 (metrics on http://127.0.0.1:8081/metrics,
ReplayEvents on 127.0.0.1:8082, spool under .data/edge-spool), contacts-svc on 127.0.0.1:50051.

Send a signed sample checkout.session.completed (a second send is a duplicate):

  curl -sS http://127.0.0.1:8080/webhooks/stripe \\
    -H "Stripe-Signature: \$(python3 dev/stripe-sign.py dev/sample-checkout.json)" \\
    -H 'Content-Type: application/json' --data-binary @dev/sample-checkout.json

See the contact, found by its email in any letter case:

  .tools/bin/grpcurl -plaintext -d '{"email":"JENNY.ROSEN@EXAMPLE.COM"}' \\
    127.0.0.1:50051 contacts.v1.ContactsService/LookupContact

Any other sender is configuration: a Standard Webhooks one (source "acme" in
dev/edge.toml), signed by the official library:

  python3 dev/standard-webhooks-sign.py dev/sample-acme.json \\
    | curl -sS http://127.0.0.1:8080/webhooks/acme -H @- --data-binary @dev/sample-acme.json

Ctrl-C stops everything.
TXT
# Everything stops as soon as one process exits (the EXIT trap stops the rest).
wait -n "${pids[@]}"
