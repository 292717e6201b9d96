#!/usr/bin/env bash
# Run every fuzz target of novate-wire for a bounded time and print the total executions.
# Usage: crates/wire/fuzz/run.sh [SECONDS_PER_TARGET]   (default 30)
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets it accept cargo-fuzz's nightly flags.
# New corpus entries go to a temporary directory; only the small seeds in seeds/ are committed.
# Built with -O -a: optimised, with debug assertions and overflow checks, so that an arithmetic
# overflow reachable from input is a crash (as in `cargo test`), not a silent wrap.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O -a 2>&1 | tail -n 1
total=0
for target in decode stream packet fix apply; do
  corpus="$(mktemp -d)"
  log="$(mktemp)"
  if ! cargo fuzz run -O -a "$target" "$corpus" "fuzz/seeds/$target" -- \
      -max_total_time="$secs" -max_len=16384 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $target FAILED (crash input above and in crates/wire/fuzz/artifacts/$target/)"
    exit 1
  fi
  runs="$(grep -oE 'Done [0-9]+ runs' "$log" | awk '{print $2}' | tail -n 1)"
  cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1)"
  echo "fuzz: $target ${runs:-0} executions in ${secs}s (${cov:-cov: ?})"
  total=$((total + ${runs:-0}))
  rm -rf "$corpus" "$log"
done
echo "fuzz: total executions $total"
