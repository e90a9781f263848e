#!/usr/bin/env bash
# Benchmarks the mesh on this machine. The script builds the release binary
# and starts each service as its own `rtim serve` process on PostgreSQL, NATS
# JetStream and Redis. It replays the REES46 file, runs `rtim bench` for every
# scenario, and prints markdown tables of the results and of each service's
# resident memory.
#
# Usage: bench/run.sh [REES46_CSV]
#
# Environment:
#   RTIM_TEST_DATABASE_URL, RTIM_TEST_NATS_URL, RTIM_TEST_REDIS_URL
#                     the backends (default: PostgreSQL, NATS and Redis on loopback)
#   BENCH_DURATION    length of each measured run (default 10s)
#   BENCH_PORT_BASE   first port tried for the services (default 63000)
#   RTIM_BIN          an rtim binary to measure instead of building one
#
# Every run uses its own schema, subject and cache prefixes. At exit the script
# deletes the run's JetStream stream but, like the mesh tests, leaves the
# schemas and cache keys behind.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="$(realpath "${1:-$ROOT/../shared/data/rees46_ecommerce_oct2019/events_2019-10-01_0000-0249UTC.csv}")"
DATABASE_URL="${RTIM_TEST_DATABASE_URL:-postgres://root@127.0.0.1/test}"
NATS_URL="${RTIM_TEST_NATS_URL:-nats://127.0.0.1:4222}"
REDIS_URL="${RTIM_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
DURATION="${BENCH_DURATION:-10s}"
SERVICES=(ingestion profile decisioning recommendations surveys gamification gateway)
CONSUMERS=(profile decisioning recommendations surveys gamification)

command -v jq >/dev/null || { echo "run.sh needs jq" >&2; exit 1; }
command -v curl >/dev/null || { echo "run.sh needs curl" >&2; exit 1; }

WORK="$(mktemp -d)"
declare -A PORT PID IDLE_KIB
cleanup() {
  for service in "${!PID[@]}"; do kill "${PID[$service]}" 2>/dev/null || true; done
  wait
  [[ -n ${UNIQUE:-} ]] && delete_stream "${UNIQUE^^}_EVENTS"
  rm -rf "$WORK"
}

# Deletes a JetStream stream through the JetStream API, in the NATS text
# protocol, and waits up to 5 seconds for the reply.
delete_stream() {
  local address=${NATS_URL#nats://}
  exec 3<>"/dev/tcp/${address%:*}/${address##*:}" 2>/dev/null || return 0
  # shellcheck disable=SC2016 # $JS is part of the subject, not a variable
  printf 'CONNECT {}\r\nSUB _INBOX.bench 1\r\nPUB $JS.API.STREAM.DELETE.%s _INBOX.bench 0\r\n\r\n' "$1" >&3
  timeout 5 grep -a -m 1 -q stream_delete_response <&3 || echo "could not delete the JetStream stream $1" >&2
  exec 3>&-
}
trap cleanup EXIT

if [[ -n ${RTIM_BIN:-} ]]; then
  RTIM="$RTIM_BIN"
else
  cargo build --release -p rtim
  RTIM="${CARGO_TARGET_DIR:-$ROOT/target}/release/rtim"
fi

# Prints the first port from $1 up that nothing on loopback listens on.
free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

# Resident memory of a process, in KiB.
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
mib() { awk -v kib="$1" 'BEGIN { printf "%.1f", kib / 1024 }'; }

# Waits up to $2 seconds for command $1 to succeed.
wait_for() {
  local deadline=$((SECONDS + $2))
  until eval "$1" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "timed out waiting for: $1" >&2; exit 1; }
    sleep 0.2
  done
}

# Events that consumer $1 has processed, from its /metrics.
processed() {
  curl -sf "http://127.0.0.1:${PORT[$1]}/metrics" |
    awk -v name="consumer=\"$1\"" '/^rtim_consumer_processed_total/ && index($0, name) { print $2 }'
}

# The mesh's configuration, as tests/mesh_replay.rs sets it up.
UNIQUE="b$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
KEY="bench-$UNIQUE"
printf 'keys:\n  - tenant: demo\n    scopes: [write, read, decide, admin]\n    sha256: %s\n' \
  "$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)" >"$WORK/keys.yaml"
next_port="${BENCH_PORT_BASE:-63000}"
for service in "${SERVICES[@]}"; do
  PORT[$service]=$(free_port "$next_port")
  next_port=$((PORT[$service] + 1))
done
export RTIM__DATABASE__URL="$DATABASE_URL" RTIM__DATABASE__SCHEMA_PREFIX="${UNIQUE}_"
export RTIM__BUS__URL="$NATS_URL" RTIM__BUS__SUBJECT_PREFIX="$UNIQUE" RTIM__BUS__ACK_WAIT=5s
export RTIM__CACHE__URL="$REDIS_URL" RTIM__CACHE__PREFIX="$UNIQUE:"
export RTIM__AUTH__KEYS_FILE="$WORK/keys.yaml" RUST_LOG=warn
export RTIM__DECISIONING__ACTIONS_FILE="$ROOT/examples/actions.yaml"
export RTIM__SURVEYS__SURVEYS_FILE="$ROOT/examples/surveys.yaml"
export RTIM__GAMIFICATION__RULES_FILE="$ROOT/examples/point-rules.yaml"
for service in "${SERVICES[@]}"; do
  [[ $service == gateway ]] || export "RTIM__ENDPOINTS__${service^^}=http://127.0.0.1:${PORT[$service]}"
done

for service in "${SERVICES[@]}"; do
  listen_setting=RTIM__SERVER__LISTEN
  [[ $service == gateway ]] && listen_setting=RTIM__GATEWAY__LISTEN
  env "$listen_setting=127.0.0.1:${PORT[$service]}" "$RTIM" serve "$service" >"$WORK/$service.log" 2>&1 &
  PID[$service]=$!
done
for service in "${SERVICES[@]}"; do
  wait_for "curl -sf http://127.0.0.1:${PORT[$service]}/healthz" 60
  IDLE_KIB[$service]=$(rss_kib "${PID[$service]}")
done
for service in "${SERVICES[@]}"; do echo "$service 127.0.0.1:${PORT[$service]}"; done |
  jq -Rn '[inputs | split(" ") | {(.[0]): .[1]}] | add' >"$WORK/endpoints.json"

"$RTIM" replay --format rees46 --quiet --ingestion "http://127.0.0.1:${PORT[ingestion]}" --api-key "$KEY" "$DATA" |
  tee "$WORK/replay.txt"
accepted=$(awk '$1 == "accepted" { print $2 }' "$WORK/replay.txt")
for consumer in "${CONSUMERS[@]}"; do
  wait_for "(( \$(processed $consumer) >= $accepted ))" 300
done

bench() {
  local name=$1
  shift
  "$RTIM" bench "$@" --endpoints "$WORK/endpoints.json" --api-key "$KEY" --nats "$NATS_URL" \
    --data "$DATA" --duration "$DURATION" --json "$WORK/$name.json"
}
bench decide decide
bench recommend recommend
bench lag lag
bench sweep-decide sweep --scenario decide
bench sweep-recommend sweep --scenario recommend --start-rate 200
# The ingest runs come last, because the consumers go on working through
# their events after they end.
bench ingest ingest
bench ingest-stream ingest --path stream
bench ingest-rest ingest --path rest
bench sweep-ingest sweep --scenario ingest --start-rate 20
declare -A AFTER_KIB
for service in "${SERVICES[@]}"; do AFTER_KIB[$service]=$(rss_kib "${PID[$service]}"); done

# Once more with the five consumers stopped: NATS then only stores, as in the
# JetStream baseline, which separates ingestion's own cost from the load that
# delivering to consumers puts on the NATS server.
for consumer in "${CONSUMERS[@]}"; do
  kill "${PID[$consumer]}"
  wait "${PID[$consumer]}" || true
  unset "PID[$consumer]"
done
bench ingest-alone ingest

echo
echo "| run | row | requests/s | events/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | ratio |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for name in decide recommend lag sweep-decide sweep-recommend ingest ingest-stream ingest-rest sweep-ingest ingest-alone; do
  jq -r 'def ms: . / 10 | round / 100;
    . as $report | .rows[] |
    [$name, .name, (.requests_per_second | round),
     (.events_per_second // "-" | if type == "number" then round else . end),
     (.latency_micros | .p50, .p90, .p99, .p999, .max | ms), .errors,
     (if .role == "scenario" and $report.ratio then ($report.ratio.value * 1000 | round / 1000) else "" end)] |
    "| " + (map(tostring) | join(" | ")) + " |"' --arg name "$name" "$WORK/$name.json"
done

echo
echo "| service | RSS idle MiB | RSS after the runs MiB |"
echo "| --- | ---: | ---: |"
for service in "${SERVICES[@]}"; do
  echo "| $service | $(mib "${IDLE_KIB[$service]}") | $(mib "${AFTER_KIB[$service]}") |"
done
