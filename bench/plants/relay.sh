#!/usr/bin/env bash
# Plant relay benchmark: the release edge-agent binary relays JOBS jobs (one
# random file of FILE_BYTES each, from a local blob store by presigned URL)
# from the local bus's job queue, over the local SQS endpoint, into a hot
# folder. Prints jobs/s, time to first ticket, and the agent's RSS idle at
# start, idle after the jobs, and at peak. See README.md.
#
#   bench/plants/relay.sh                        # 1000 jobs of 1 MiB, concurrency 8
#   CONCURRENCY=8,16 bench/plants/relay.sh       # one round per value
#   JOBS=200 FILE_BYTES=65536 bench/plants/relay.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

export JOBS=${JOBS:-1000}
export FILE_BYTES=${FILE_BYTES:-1048576}
export CONCURRENCY=${CONCURRENCY:-8}

cargo build --release -p edge-agent
export EDGE_AGENT_BIN="${CARGO_TARGET_DIR:-$root/target}/release/edge-agent"
exec cargo bench -p printworks-local --bench relay
