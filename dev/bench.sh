#!/usr/bin/env bash
# `make bench`: builds the release binaries, starts a private redis-server (AOF,
# appendfsync everysec), contacts-svc and the edge, then drives first a no-op HTTP server
# (the baseline) and then hookline with the same load generator and the same load, and
# prints one markdown table with both rows, hookline's share of the baseline and the
# targets. Method and recorded results: BENCHMARKS.md.
#
# Parameters (environment):
#   CONNECTIONS=64 DURATION=10 (s, measured) WARMUP=2 (s) SIZE=2048 (bytes per event)
#   DUP_RATIO=0 BAD_SIG_RATIO=0 LOADGEN_THREADS=1 (0: one per core)
#   WORKER_THREADS=1 (threads of each server: edge, contacts-svc and the baseline; four
#   busy processes share the machine's cores, so one each wastes least on wake-ups)
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
WORKER_THREADS=${WORKER_THREADS:-1}
SECRET=whsec_hookline_bench_only

started=$SECONDS
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
  # The baseline server's pid is forgotten once it was reaped, so a recycled pid is
  # never signalled.
  [ -n "${noop_pid:-}" ] && pids+=("$noop_pid")
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

read -r redis_port contacts_port edge_port noop_port < <("$bin/loadgen" free-ports 4)

mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" \
  --appendonly yes --appendfsync everysec --save "" \
  --logfile "$work/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
wait_redis "$redis_port"
durability=$(redis-cli -p "$redis_port" config get appendfsync | tail -n 1)
aof=$(redis-cli -p "$redis_port" config get appendonly | tail -n 1)

"$bin/contacts-svc" --listen "127.0.0.1:$contacts_port" --worker-threads "$WORKER_THREADS" \
  --redis-url "redis://127.0.0.1:$redis_port/0" >"$work/contacts-svc.log" 2>&1 &
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
"$bin/edge" --config "$work/edge.toml" --worker-threads "$WORKER_THREADS" >"$work/edge.log" 2>&1 &
edge_pid=$!
pids+=("$edge_pid")

"$bin/noop" --listen "127.0.0.1:$noop_port" --worker-threads "$WORKER_THREADS" >"$work/noop.log" 2>&1 &
noop_pid=$!

"$bin/loadgen" wait --url "http://127.0.0.1:$edge_port/readyz" --timeout-secs 30
"$bin/loadgen" wait --url "http://127.0.0.1:$noop_port/" --timeout-secs 30

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- edge contacts-svc proto 2>/dev/null || revision="$revision + uncommitted changes in the services"
cat <<TXT
== revision: $revision
== ports: redis $redis_port, contacts-svc $contacts_port, edge $edge_port, baseline $noop_port (logs in $work until the end)
== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(uname -sr)
== servers: $WORKER_THREADS worker thread(s) each
== durability: redis-server $(redis-server --version | grep -o 'v=[^ ]*' | cut -c3-), appendonly $aof, appendfsync $durability (an acknowledged event is lost only if the machine fails within a second)
== load: $CONNECTIONS keep-alive connections, ${SIZE}-byte signed checkout.session.completed events, dup ratio $DUP_RATIO, bad-signature ratio $BAD_SIG_RATIO, ${WARMUP} s warm-up + ${DURATION} s measured, per run
TXT

load=(--connections "$CONNECTIONS" --warmup "$WARMUP" --duration "$DURATION" --size "$SIZE"
  --dup-ratio "$DUP_RATIO" --bad-sig-ratio "$BAD_SIG_RATIO" --threads "$LOADGEN_THREADS"
  --secret "$SECRET" --clk-tck "$clk_tck")

echo "== baseline: no-op hyper server"
"$bin/loadgen" run "${load[@]}" --label "no-op baseline" \
  --url "http://127.0.0.1:$noop_port/webhooks/stripe" \
  --service "noop=$noop_pid" --out "$work/baseline.json"
# The baseline server stays idle from here on; stop it so it takes nothing from hookline.
kill -TERM "$noop_pid" 2>/dev/null || true
wait "$noop_pid" 2>/dev/null || true
noop_pid=

echo "== hookline: edge → contacts-svc → redis"
"$bin/loadgen" run "${load[@]}" --label "hookline" \
  --url "http://127.0.0.1:$edge_port/webhooks/stripe" \
  --service "edge=$edge_pid" --service "contacts-svc=$contacts_pid" \
  --watch "redis=$redis_pid" --out "$work/hookline.json"

# What Redis holds: one log entry per distinct event, warm-up included. Commands per
# logged event (those run inside scripts included) show the cost of the store's layout.
logged=$(redis-cli -p "$redis_port" zcard hl:events)
echo "== redis after the run: $logged events logged, $(redis-cli -p "$redis_port" zcard hl:contacts) contacts, $(redis-cli -p "$redis_port" dbsize) keys, $(redis-cli -p "$redis_port" info persistence | grep -o 'aof_rewrites:[0-9]*' | cut -d: -f2) AOF rewrites"
redis-cli -p "$redis_port" info commandstats | tr -d '\r' |
  awk -F'[:=,]' -v n="$logged" '/^cmdstat_/ && n > 0 && $3 / n >= 0.05 {
      sub("cmdstat_", "", $1); out = out sprintf("%s%s %.1f (%.1f µs)", sep, $1, $3 / n, $7); sep = ", " }
    END { print "== redis commands per logged event (µs per call): " out }'

echo
echo "== results ($(date -u +%Y-%m-%d), $(nproc) cores)"
echo
mkdir -p "${CARGO_TARGET_DIR:-target}/bench"
"$bin/loadgen" table --baseline "$work/baseline.json" --hookline "$work/hookline.json" |
  tee "${CARGO_TARGET_DIR:-target}/bench/latest.md"
cp "$work/baseline.json" "$work/hookline.json" "${CARGO_TARGET_DIR:-target}/bench/"
echo
echo "bench took $((SECONDS - started)) s (release build $build_secs s); table in ${CARGO_TARGET_DIR:-target}/bench/latest.md"
