#!/usr/bin/env bash
# `make bench`: builds the release binaries, starts a private redis-server (AOF,
# appendfsync everysec), contacts-svc and the edge, and the Node.js yardstick
# (bench/node, with a second private redis-server of the same settings), then drives a
# no-op HTTP server (the baseline), the Node.js handler and hookline, in that order, with
# the same load generator and the same load, and prints one markdown table with the three
# rows, hookline's share of the baseline and of Node's, Redis commands and bytes per
# stored event, and the targets. Method and recorded results: BENCHMARKS.md.
#
# The Node.js run needs Node.js 20 or later with npm (`npm ci` runs when bench/node has
# no node_modules or an older one than its lock); without them it is left out.
#
# Parameters (environment):
#   CONNECTIONS=64 DURATION=10 (s, measured) WARMUP=2 (s) SIZE=2048 (bytes per event)
#   DUP_RATIO=0 BAD_SIG_RATIO=0 LOADGEN_THREADS=1 (0: one per core)
#   PAIRS=5 PAIR_DURATION=5 (s): the first pair is the two full runs above; each further
#   pair runs Node.js then hookline again, and the ratio is the median over the pairs
#   CLUSTER=1: hookline runs on a private Redis Cluster of 3 masters with a replica each
#   (AOF everysec on every node) instead of one Redis, with WAIT_REPLICAS=1
#   (--redis-wait-replicas; WAIT_REPLICAS=0 measures the cluster without it)
#   EDGE_THREADS=1 CONTACTS_THREADS=2 BASELINE_THREADS=1 (worker threads of each server;
#   WORKER_THREADS sets all three). Four busy processes share the cores: one thread for
#   the edge wastes least on wake-ups, and a second for contacts-svc lets its work
#   overlap with Redis's (BENCHMARKS.md, eighth round)
# Everything this script starts is stopped on exit, and its directory removed.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SIZE=${SIZE:-2048}
DUP_RATIO=${DUP_RATIO:-0}
BAD_SIG_RATIO=${BAD_SIG_RATIO:-0}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
EDGE_THREADS=${EDGE_THREADS:-${WORKER_THREADS:-1}}
CONTACTS_THREADS=${CONTACTS_THREADS:-${WORKER_THREADS:-2}}
BASELINE_THREADS=${BASELINE_THREADS:-${WORKER_THREADS:-1}}
PAIRS=${PAIRS:-5}
CLUSTER=${CLUSTER:-0}
WAIT_REPLICAS=${WAIT_REPLICAS:-$([ "$CLUSTER" = 1 ] && echo 1 || echo 0)}
PAIR_DURATION=${PAIR_DURATION:-5}
SECRET=whsec_hookline_bench_only

started=$SECONDS
node_dir=bench/node
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
with_node=0
if command -v npm >/dev/null && [ "$node_major" -ge 20 ]; then
  with_node=1
else
  echo "== no Node.js 20 or later with npm here: the Node.js yardstick's run is left out"
fi

echo "== building release binaries (cargo build --release --bins)"
cargo build --release --bins --quiet
build_secs=$((SECONDS - started))
bin=${CARGO_TARGET_DIR:-target}/release
clk_tck=$(getconf CLK_TCK)

work=$(mktemp -d "${TMPDIR:-/tmp}/hookline-bench.XXXXXX")
pids=()
stop() {
  local rc=$?
  trap - EXIT
  # The pids of the servers stopped after their run are forgotten once they were
  # reaped, so a recycled pid is never signalled.
  for pid in "${noop_pid:-}" "${node_pid:-}" "${node_redis_pid:-}"; do
    [ -n "$pid" ] && pids+=("$pid")
  done
  if [ "${#pids[@]}" -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ]; then
    for log in "$work"/*.log; do
      [ -f "$log" ] || continue
      echo "-- last lines of $(basename "$log")" >&2
      tail -n 20 "$log" >&2
    done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Waits up to 10 s for `redis-cli ping` on port $1.
wait_redis() {
  for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "redis-server did not answer on port $1" >&2
  return 1
}

# Waits up to 60 s until no Redis given by port ($@) is rewriting its AOF, so that one
# run does not pay for the rewrite another run's data set off.
wait_quiet() {
  for _ in $(seq 1 600); do
    local busy=0
    for port in "$@"; do
      redis-cli -p "$port" info persistence | grep -q '^aof_rewrite_in_progress:1' && busy=1
    done
    [ "$busy" = 0 ] && return 0
    sleep 0.1
  done
}

# AOF rewrites the Redis servers given by port ($@) finished or are running: a run during
# which this grows paid for a rewrite.
aof_rewrites() {
  local n=0
  for port in "$@"; do
    n=$((n + $(redis-cli -p "$port" info persistence |
      awk -F: '/^aof_rewrites:|^aof_rewrite_in_progress:/ {s += $2} END {print s + 0}')))
  done
  echo "$n"
}

# Says so when the AOF rewrites counted before a run ($1) grew during it (ports: the rest).
note_rewrite() {
  local before=$1
  shift
  [ "$(aof_rewrites "$@")" -gt "$before" ] && echo "   (its Redis rewrote its AOF during this run)"
  return 0
}

# Stops a server started by this script and waits until it has exited.
stop_server() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Shows what a Redis holds and the commands per stored event (those run inside scripts
# included), with the µs each took: the cost of the store's layout.
# Usage: redis_report PORT STORED DESCRIPTION
redis_report() {
  echo "== redis after the run: $3, $(redis-cli -p "$1" dbsize) keys, $(redis-cli -p "$1" info persistence | grep -o 'aof_rewrites:[0-9]*' | cut -d: -f2) AOF rewrites"
  redis-cli -p "$1" info commandstats | tr -d '\r' |
    awk -F'[:=,]' -v n="$2" '/^cmdstat_/ && n > 0 && $3 / n >= 0.05 {
        sub("cmdstat_", "", $1); out = out sprintf("%s%s %.1f (%.1f µs)", sep, $1, $3 / n, $7); sep = ", " }
      END { print "== redis commands per logged event (µs per call): " out }'
}

if [ "$with_node" = 1 ] && { [ ! -f "$node_dir/node_modules/.package-lock.json" ] ||
  [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; }; then
  echo "== installing the Node.js yardstick's packages (npm ci in $node_dir)"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) >"$work/npm-ci.log" 2>&1
fi

read -r -a ports < <("$bin/loadgen" free-ports 11)
redis_port=${ports[0]} contacts_port=${ports[1]} edge_port=${ports[2]} noop_port=${ports[3]}
node_redis_port=${ports[4]} node_port=${ports[5]}

# hookline's Redis: one server, or (CLUSTER=1) the nodes of a cluster, $redis_port the
# first of them. `masters` are the ports whose data and commands count.
redis_watch=()
if [ "$CLUSTER" = 1 ]; then
  cluster_ports=("$redis_port" "${ports[@]:6:5}")
  for port in "${cluster_ports[@]}"; do
    mkdir -p "$work/cluster/$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$work/cluster/$port" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
      --appendonly yes --appendfsync everysec --save "" \
      --logfile "$work/cluster/$port/redis.log" &
    pids+=($!)
    redis_watch+=(--watch "redis-$port=$!")
    wait_redis "$port"
  done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster_ports[@]}") \
    --cluster-replicas 1 --cluster-yes >"$work/cluster-create.log"
  for _ in $(seq 1 300); do
    ok=1
    for port in "${cluster_ports[@]}"; do
      redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok' || ok=0
      redis-cli -p "$port" info replication | grep -q '^role:master' ||
        redis-cli -p "$port" info replication | grep -q '^master_link_status:up' || ok=0
    done
    [ "$ok" = 1 ] && break
    sleep 0.1
  done
  masters=()
  for port in "${cluster_ports[@]}"; do
    redis-cli -p "$port" info replication | grep -q '^role:master' && masters+=("$port")
  done
  redis_args=(--redis-cluster "$(printf 'redis://127.0.0.1:%s,' "${cluster_ports[@]}" | sed 's/,$//')")
  redis_urls=$(printf 'redis://127.0.0.1:%s,' "${masters[@]}" | sed 's/,$//')
else
  mkdir -p "$work/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
    --appendonly yes --appendfsync everysec --save "" \
    --logfile "$work/redis.log" &
  pids+=($!)
  redis_watch+=(--watch "redis=$!")
  wait_redis "$redis_port"
  masters=("$redis_port")
  cluster_ports=("$redis_port")
  redis_args=(--redis-url "redis://127.0.0.1:$redis_port/0")
  redis_urls="redis://127.0.0.1:$redis_port/0"
fi
durability=$(redis-cli -p "$redis_port" config get appendfsync | tail -n 1)
aof=$(redis-cli -p "$redis_port" config get appendonly | tail -n 1)

"$bin/contacts-svc" --listen "127.0.0.1:$contacts_port" --worker-threads "$CONTACTS_THREADS" \
  "${redis_args[@]}" --redis-wait-replicas "$WAIT_REPLICAS" --insecure-no-auth >"$work/contacts-svc.log" 2>&1 &
contacts_pid=$!
pids+=("$contacts_pid")

cat >"$work/edge.toml" <<TOML
listen = "127.0.0.1:$edge_port"
contacts_url = "http://127.0.0.1:$contacts_port"
max_body_bytes = 1048576
contacts_timeout_ms = 5000

[sources.stripe]
kind = "stripe"
secrets = ["$SECRET"]
tolerance_secs = 300
TOML
"$bin/edge" --config "$work/edge.toml" --worker-threads "$EDGE_THREADS" >"$work/edge.log" 2>&1 &
edge_pid=$!
pids+=("$edge_pid")

"$bin/noop" --listen "127.0.0.1:$noop_port" --worker-threads "$BASELINE_THREADS" >"$work/noop.log" 2>&1 &
noop_pid=$!

# The Node.js yardstick with a Redis of its own, with the same settings as hookline's, so
# each system's Redis work is measured alone.
if [ "$with_node" = 1 ]; then
  mkdir -p "$work/redis-node"
  redis-server --port "$node_redis_port" --bind 127.0.0.1 --dir "$work/redis-node" \
    --appendonly yes --appendfsync everysec --save "" \
    --logfile "$work/redis-node.log" &
  node_redis_pid=$!
  wait_redis "$node_redis_port"
  PORT=$node_port REDIS_URL="redis://127.0.0.1:$node_redis_port/0" STRIPE_WEBHOOK_SECRET=$SECRET \
    NODE_ENV=production node "$node_dir/server.js" >"$work/node.log" 2>&1 &
  node_pid=$!
fi

"$bin/loadgen" wait --url "http://127.0.0.1:$edge_port/readyz" --timeout-secs 30
"$bin/loadgen" wait --url "http://127.0.0.1:$noop_port/" --timeout-secs 30
if [ "$with_node" = 1 ]; then
  "$bin/loadgen" wait --url "http://127.0.0.1:$node_port/healthz" --timeout-secs 30
fi

node_ports=
if [ "$with_node" = 1 ]; then
  node_ports=", node $node_port with redis $node_redis_port"
fi
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- edge contacts-svc proto 2>/dev/null || revision="$revision + uncommitted changes in the services"
cat <<TXT
== revision: $revision
== ports: redis $redis_port, contacts-svc $contacts_port, edge $edge_port, baseline $noop_port$node_ports (logs in $work until the end)
== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(uname -sr)
== servers' worker threads: edge $EDGE_THREADS, contacts-svc $CONTACTS_THREADS, baseline $BASELINE_THREADS
== durability: redis-server $(redis-server --version | grep -o 'v=[^ ]*' | cut -c3-), appendonly $aof, appendfsync $durability (an acknowledged event is lost only if the machine fails within a second)
== hookline's redis: $([ "$CLUSTER" = 1 ] && echo "a cluster of ${#masters[@]} masters with a replica each (ports ${cluster_ports[*]})" || echo "one redis-server"), --redis-wait-replicas $WAIT_REPLICAS
== load: $CONNECTIONS keep-alive connections, ${SIZE}-byte signed checkout.session.completed events, dup ratio $DUP_RATIO, bad-signature ratio $BAD_SIG_RATIO, ${WARMUP} s warm-up + ${DURATION} s measured, per run
TXT
if [ "$with_node" = 1 ]; then
  echo "== node: $(node --version), a cluster of 2 workers, $(cd "$node_dir" && node -p 'Object.entries(require("./package.json").dependencies).map(([k, v]) => k + " " + v).join(", ")')"
fi

load=(--connections "$CONNECTIONS" --warmup "$WARMUP" --duration "$DURATION" --size "$SIZE"
  --dup-ratio "$DUP_RATIO" --bad-sig-ratio "$BAD_SIG_RATIO" --threads "$LOADGEN_THREADS"
  --secret "$SECRET" --clk-tck "$clk_tck")

echo "== baseline: no-op hyper server"
"$bin/loadgen" run "${load[@]}" --label "no-op baseline" \
  --url "http://127.0.0.1:$noop_port/webhooks/stripe" \
  --service "noop=$noop_pid" --out "$work/baseline.json"
# Each server stays idle once its run is done; it is stopped so it takes nothing from
# the next run.
stop_server "$noop_pid"
noop_pid=

node_table=()
if [ "$with_node" = 1 ]; then
  echo "== node: fastify, cluster of 2 workers → redis"
  # The cluster's primary and its workers are measured as one; the events stored are
  # the entries of the stream it appends to.
  "$bin/loadgen" run "${load[@]}" --label "node fastify cluster-2" \
    --url "http://127.0.0.1:$node_port/webhooks/stripe" \
    --service-tree "node=$node_pid" --watch "redis=$node_redis_pid" \
    --redis "redis://127.0.0.1:$node_redis_port/0" --redis-events events \
    --out "$work/node.json"
  stored=$(redis-cli -p "$node_redis_port" xlen events)
  redis_report "$node_redis_port" "$stored" "$stored events in the stream"
  node_table=(--node "$work/node.json")
fi

redis_ports=("${cluster_ports[@]}")
if [ "$with_node" = 1 ]; then
  redis_ports+=("$node_redis_port")
fi
wait_quiet "${redis_ports[@]}"
echo "== hookline: edge → contacts-svc → redis"
"$bin/loadgen" run "${load[@]}" --label "hookline" \
  --url "http://127.0.0.1:$edge_port/webhooks/stripe" \
  --service "edge=$edge_pid" --service "contacts-svc=$contacts_pid" \
  "${redis_watch[@]}" \
  --redis "$redis_urls" --redis-events hl:events:log --redis-events-per-field \
  --out "$work/hookline.json"

if [ "$CLUSTER" = 1 ]; then
  keys=()
  for port in "${masters[@]}"; do keys+=("$port: $(redis-cli -p "$port" dbsize)"); done
  echo "== redis keys per master: ${keys[*]}"
else
  # What Redis holds: one record per distinct event, warm-up included (the webhook log
  # names a batch's events in one stream entry), and one contact per event.
  logged=$(redis-cli -p "$redis_port" --scan --pattern 'hl:ev:*' | wc -l)
  redis_report "$redis_port" "$logged" \
    "$logged events recorded, $(redis-cli -p "$redis_port" --scan --pattern 'hl:c:*' | wc -l) contacts"
  # Bytes of one key of each kind (MEMORY USAGE: value, key and Redis's overhead).
  sample() { redis-cli -p "$redis_port" memory usage "$(redis-cli -p "$redis_port" --scan --pattern "$1" | head -1)"; }
  echo "== redis bytes per key (MEMORY USAGE of one): contact $(sample 'hl:c:*'), event record $(sample 'hl:ev:*'), index entries: email $(sample 'hl:idx:email:*'), phone $(sample 'hl:idx:phone:*'), payment $(sample 'hl:idx:pay:*'); streams: webhook log $(redis-cli -p "$redis_port" memory usage hl:events:log), new contacts $(redis-cli -p "$redis_port" memory usage hl:contacts:new)"
fi

# More pairs of runs, Node.js then hookline, each pair one after the other: the ratio
# is judged by its median over the pairs, so a slow spell of the machine during one
# run does not decide it. Both servers stay up between their runs, as in a longer run.
if [ "$with_node" = 1 ]; then
  pair_load=(--connections "$CONNECTIONS" --warmup 1 --duration "$PAIR_DURATION" --size "$SIZE"
    --dup-ratio "$DUP_RATIO" --bad-sig-ratio "$BAD_SIG_RATIO" --threads "$LOADGEN_THREADS"
    --secret "$SECRET" --clk-tck "$clk_tck")
  for pair in $(seq 2 "$PAIRS"); do
    echo "== pair $pair of $PAIRS: node, then hookline (${PAIR_DURATION} s each)"
    wait_quiet "${redis_ports[@]}"
    before=$(aof_rewrites "$node_redis_port")
    "$bin/loadgen" run "${pair_load[@]}" --label "node fastify cluster-2" \
      --url "http://127.0.0.1:$node_port/webhooks/stripe" \
      --service-tree "node=$node_pid" --out "$work/node-$pair.json" | sed -n 1p
    note_rewrite "$before" "$node_redis_port"
    wait_quiet "${redis_ports[@]}"
    before=$(aof_rewrites "${masters[@]}")
    "$bin/loadgen" run "${pair_load[@]}" --label "hookline" \
      --url "http://127.0.0.1:$edge_port/webhooks/stripe" \
      --service "edge=$edge_pid" --service "contacts-svc=$contacts_pid" \
      --out "$work/hookline-$pair.json" | sed -n 1p
    note_rewrite "$before" "${masters[@]}"
    node_table+=(--pair "$work/node-$pair.json,$work/hookline-$pair.json")
  done
  stop_server "$node_pid"
  node_pid=
  stop_server "$node_redis_pid"
  node_redis_pid=
fi

echo
echo "== results ($(date -u +%Y-%m-%d), $(nproc) cores)"
echo
mkdir -p "${CARGO_TARGET_DIR:-target}/bench"
"$bin/loadgen" table --baseline "$work/baseline.json" "${node_table[@]}" \
  --hookline "$work/hookline.json" | tee "${CARGO_TARGET_DIR:-target}/bench/latest.md"
cp "$work"/{baseline,hookline}.json "${CARGO_TARGET_DIR:-target}/bench/"
if [ "$with_node" = 1 ]; then
  cp "$work/node.json" "${CARGO_TARGET_DIR:-target}/bench/"
fi
echo
echo "bench took $((SECONDS - started)) s (release build $build_secs s); table in ${CARGO_TARGET_DIR:-target}/bench/latest.md"
