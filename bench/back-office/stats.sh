#!/usr/bin/env bash
# Back-office benchmark: ORDERS (100000) orders over DAYS (90) days in the
# local SQLite store with their statistics, then GET /v1/ops/stats over
# loopback HTTP; prints the fill time and each query's median, p95 and
# worst of ROUNDS (50) requests. See local/benches/back_office.rs.
#
#   bench/back-office/stats.sh
#   ORDERS=20000 ROUNDS=20 bench/back-office/stats.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench -p printworks-local --bench back_office
