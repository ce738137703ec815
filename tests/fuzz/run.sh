#!/usr/bin/env bash
# Runs one fuzz target for FUZZ_SECONDS (default 30) on one core:
#   run.sh TARGET_EXE NAME CORPUS_DIR SOURCE_DIR
# New inputs go to CORPUS_DIR/NAME.run (kept between runs), the seeds from
# CORPUS_DIR/NAME are read, NAME.dict (here or generated) is the
# dictionary. A crash, leak, sanitizer report, timeout or out-of-memory is a
# finding: libFuzzer exits nonzero and writes the input to
# CORPUS_DIR/NAME.findings/, which this script lists. The last line of
# libFuzzer's log (execs, cov, ft, exec/s) is printed for the record.
set -uo pipefail
exe=$1 name=$2 corpus=$3 src=$4
seconds=${FUZZ_SECONDS:-30}
run="$corpus/$name.run" findings="$corpus/$name.findings"
mkdir -p "$run" "$findings"
dict=()
for d in "$src/$name.dict" "$corpus/$name.dict"; do
  [ -f "$d" ] && dict=(-dict="$d")
done
log="$corpus/$name.log"
"$exe" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$findings/" \
  "${dict[@]}" "$run" "$corpus/$name" >"$log" 2>&1
rc=$?
grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log"
if [ $rc -ne 0 ]; then
  echo "fuzz_$name: FINDING (exit $rc); inputs in $findings:"
  ls -l "$findings"
  tail -60 "$log"
  exit 1
fi
echo "fuzz_$name: ${seconds}s, no finding"
