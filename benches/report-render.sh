#!/usr/bin/env bash
# How long `pflow trace report` takes to draw a 10,000-span trace in headless
# Chromium (playwright-core, tests/browser): from navigation to the page's
# `data-rendered` mark, three times. Prints numbers; asserts nothing.
# Needs `npm ci` in tests/browser and /usr/bin/chromium (as .ci/run sets up).
set -euo pipefail
cd "$(dirname "$0")/.."
pflow="${PFLOW:-target/release/pflow}"
[[ -x "$pflow" ]] || cargo build --release
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# One batch node of 9,997 items: with the run, workflow and batch spans, 10,000 spans.
node -e '
const items = Array.from({length: 9997}, (_, i) => i);
console.log(JSON.stringify({ir_version: "0.1.0", metadata: {name: "ten-thousand"},
  nodes: [{id: "fan", type: "echo", batch: {items, parallel: true, max_concurrent: 16},
           params: {text: "item ${item}"}}]}));' > "$tmp/wf.json"
PFLOW_HOME="$tmp/home" "$pflow" --output-format json run "$tmp/wf.json" --trace > "$tmp/run.json"
trace="$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1])).trace_file)' "$tmp/run.json")"
spans="$(grep -o '"spanId"' "$trace" | wc -l)"
PFLOW_HOME="$tmp/home" "$pflow" trace report "$trace" -o "$tmp/report.html" 2>/dev/null
echo "trace: $spans spans, report $(( $(stat -c %s "$tmp/report.html") / 1024 )) KiB"
for i in 1 2 3; do
  (cd tests/browser && node report.mjs render "$tmp/report.html")
done
