#!/usr/bin/env bash
# Order intake benchmark: starts `printworks up` (release build, a fresh data
# directory, the durable SQLite store) and drives POST /v1/orders with wrk
# at 32 concurrent connections, each request with its own Idempotency-Key.
# Prints orders/s and p50/p90/p99 latency, then checks that every 201 is a
# stored order. Runs both durability settings by default.
#
#   bench/orders.sh                  # 20 s each, sync normal then full
#   DURATION=60s SYNCS=normal bench/orders.sh
#   BIN=/tmp/printworks-before bench/orders.sh   # a binary built elsewhere
#
# Needs wrk (Debian package `wrk`; installed if missing and apt is usable).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
SYNCS=${SYNCS:-normal full}

if ! command -v wrk >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else
    echo "wrk is needed: apt-get install wrk" >&2; exit 1
  fi
fi

# BIN=path: another build to measure (an A/B of two commits' binaries).
if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release --quiet -p printworks-local
  bin=target/release/printworks
fi
export PW_BODY='{"locale":"de","currency":"EUR","reference":"PO-4711","customer":{"name":"Erika Mustermann","email":"erika@example.com"},"shipping":{"method":"standard","address":{"name":"Erika Mustermann","line1":"Heidestr. 17","postal_code":"51147","city":"Köln","country":"DE"}},"items":[{"sku":"poster-30x40","quantity":2,"options":{"finish":"glossy"},"images":[{"upload_id":"upl_0123456789abcdef0123456789abcdef"}]},{"sku":"photo-10x15","quantity":24,"images":[{"url":"https://images.example.com/a.jpg"}]}]}'

echo "machine: $(nproc) cores; wrk -t$THREADS -c$CONNECTIONS -d$DURATION; server and load generator share the machine"
for sync in $SYNCS; do
  data=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
  RUST_LOG=warn "$bin" up --port "$port" --data-dir "$data" --sync "$sync" >"$data/up.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do grep -q '^Ctrl-C stops' "$data/up.log" 2>/dev/null && break; sleep 0.1; done
  # B2B: each order is written with OrderPlaced and OrderPaid, and both are relayed to the queues.
  PW_KEY=$(awk '$1=="key" && $2=="demo-b2b" {print $3}' "$data/up.log")
  export PW_KEY
  # warm-up, then the measured run
  wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s bench/orders.lua "http://127.0.0.1:$port" >/dev/null
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s bench/orders.lua "http://127.0.0.1:$port")
  result=$(grep '^RESULT' <<<"$out")
  kill -INT "$pid"; wait "$pid" || true
  stored=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from orders').fetchone()[0])" "$data/printworks.sqlite")
  relayed=$(python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('select count(*) from outbox').fetchone()[0])" "$data/printworks.sqlite")
  echo "sync=$sync ${result#RESULT } stored_orders_total=$stored outbox_left_after_stop=$relayed"
  rm -rf "$data"
done
