#!/usr/bin/env bash
# Runs every fuzz target of the main module briefly (FUZZTIME each, default 3s), so that a
# parser of outside input that crashes, hangs or breaks its own invariants on a short
# exploration fails the build. Found inputs land in the package's testdata/fuzz: commit them.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-3s}
failed=0
while IFS=: read -r file name; do
  pkg=./$(dirname "$file")
  ok=1
  out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1) || ok=0
  # The fuzzing engine itself can time out stopping its workers on a loaded machine
  # ("context deadline exceeded", no failing input written): run the target once more.
  if [[ $ok == 0 && $out == *"context deadline exceeded"* && $out != *"Failing input written"* ]]; then
    echo "fuzz: $pkg $name: the fuzzing engine timed out stopping its workers; once more"
    ok=1
    out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1) || ok=0
  fi
  if [[ $ok == 0 ]]; then
    echo "fuzz: $pkg $name FAILED"
    echo "$out" | tail -30
    failed=1
  else
    echo "fuzz: $pkg $name ok"
  fi
done < <(git grep -l -e '^func Fuzz' -- '*_test.go' ':!benchmarks' | while read -r f; do
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed "s#^func #$f:#"
done)
exit $failed
