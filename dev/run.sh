#!/usr/bin/env bash
# `make run`: Redis (the one on $REDIS_URL if it answers, else a local redis-server with
# AOF under .data/), contacts-svc and edge with dev/edge.toml. Prints a command that
# sends a correctly signed sample webhook and one that shows the resulting contact.
# Ctrl-C stops everything this script started.
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

if redis_answers; then
  echo "using the Redis on $redis_host:$redis_port"
else
  mkdir -p .data/redis
  echo "starting redis-server on $redis_port (AOF, fsync always) in .data/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$PWD/.data/redis" \
    --appendonly yes --appendfsync always --save "" --logfile "$PWD/.data/redis/redis.log" &
  pids+=($!)
  wait_for "redis-server" redis_answers
fi

cargo build --quiet --bins
target/debug/contacts-svc --listen 127.0.0.1:50051 --redis-url "$redis_url" &
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
