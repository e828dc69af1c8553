#!/usr/bin/env bash
# The demo behind `make demo`: netpol-gen on the bundled ticket-booking example.
# Today: `check` replays a day of the app's recorded traffic against the hand-written policies in
# force and shows the flows they would cut (exit code 1 = some flow denied, as in CI).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
EX=examples/ticket-booking

echo "== netpol-gen check: recorded traffic vs. the policies in force ($EX/policies)"
$BIN/netpol-gen check --cluster "$EX/cluster.yaml" --policies "$EX/policies" --flows "$EX/flows.jsonl"
status=$?
if [ "$status" -eq 1 ]; then
  echo "== check exited 1: the policies in force would cut the denied flows above"
elif [ "$status" -ne 0 ]; then
  echo "== check failed (exit $status)"; exit "$status"
fi
