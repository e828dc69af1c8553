#!/usr/bin/env bash
# The demo behind `make demo`: the whole learn -> export -> check -> diff flow on the bundled
# ticket-booking example (examples/make_ticket_booking.py says what the app is and does).
#   1. learn:  import a capture of a day of the app's traffic plus the cluster snapshot into a store
#              (embedded SQLite under out/demo/)
#   2. export: write least-privilege policies for what was learnt (verified by the evaluator)
#   3. check:  replay the recorded flows against the generated policies: all must be allowed
#   4. diff:   compare with the hand-written policies in force, and show what each side would cut
#   5. map:    the same change drawn as one HTML page (open it in a browser)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
EX=examples/ticket-booking
OUT=${DEMO_OUT:-out/demo}  # DEMO_OUT: elsewhere (the test writes to its temporary directory)
rm -rf "$OUT" && mkdir -p "$OUT"
DB="sqlite:///$OUT/netpol-gen.db"

echo "== 1. learn: netpol-gen import --pcap $EX/capture.pcap --cluster $EX/cluster.yaml"
$BIN/netpol-gen import --db "$DB" --cluster "$EX/cluster.yaml" --pcap "$EX/capture.pcap"
$BIN/netpol-gen flows --db "$DB" --namespace booking

echo; echo "== 2. export: netpol-gen export --output-dir $OUT/policies (report: $OUT/export-report.txt)"
# the summary opens the report; the rest (the count of edges left to the own-node rule, warnings) is in the file
$BIN/netpol-gen export --db "$DB" --output-dir "$OUT/policies" 2> "$OUT/export-report.txt"
sed -n '1,/^policies: /{/^policies: /!p}' "$OUT/export-report.txt"
echo "policies: $(ls "$OUT"/policies/*.yaml | tr '\n' ' ')"

echo; echo "== 3. check: every recorded flow against the generated policies"
$BIN/netpol-gen check --cluster "$EX/cluster.yaml" --policies "$OUT/policies" --flows "$EX/flows.jsonl"

echo; echo "== 4. diff: generated policies vs. the hand-written ones in force ($EX/policies)"
set +e
$BIN/netpol-gen diff --proposed "$OUT/policies" --against "$EX/policies" \
  --cluster "$EX/cluster.yaml" --flows "$EX/flows.jsonl" > "$OUT/diff.txt"
status=$?
set -e
sed '/^$/q' "$OUT/diff.txt"  # the summary: everything before the first blank line
echo "the whole diff (per policy, per connection): $OUT/diff.txt"
case $status in
  0) echo "== diff: no change" ;;
  1) echo "== diff exited 1: changes, and no recorded flow would be cut" ;;
  3) echo "== diff exited 3: some recorded flow would be denied (see above)"; exit 1 ;;
  *) exit "$status" ;;
esac

echo; echo "== 5. map: netpol-gen map --proposed $OUT/policies --against $EX/policies --output $OUT/map.html"
$BIN/netpol-gen map --db "$DB" --proposed "$OUT/policies" --against "$EX/policies" --output "$OUT/map.html"
