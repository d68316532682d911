#!/usr/bin/env bash
# Run the shared peer benchmark (/work/shared/bench, read-only) with aioq dropped in.
#
#   bash benchmarks/peer/run.sh                    # full run, ~10-15 min
#   BENCH_REPEATS=1 BENCH_N_NOOP=5000 BENCH_N_SLEEP=2000 BENCH_N_LAT=100 \
#     bash benchmarks/peer/run.sh                  # quick check, ~2-3 min
#
# Copies the shared harness to a temporary directory, adds peer_aioq.py and aioq.txt,
# and runs it with BENCH_PEERS (default "raw aioq streaq saq taskiq arq"); every BENCH_*
# knob of the harness (see its README.md) passes through. Results go to
# benchmarks/peer/RESULTS.md and results.json (BENCH_RESULTS / BENCH_RESULTS_JSON override).
# BENCH_SHARED overrides where the shared harness is (default /work/shared/bench, else
# ../shared/bench next to the repository); AIOQ_SRC which aioq checkout is installed
# (default: this repository, editable, so the working tree is what runs).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SHARED="${BENCH_SHARED:-}"
if [ -z "$SHARED" ]; then
    for c in /work/shared/bench "$ROOT/../shared/bench"; do
        if [ -f "$c/bench.py" ]; then SHARED="$c"; break; fi
    done
fi
[ -n "$SHARED" ] && [ -f "$SHARED/bench.py" ] || { echo "run.sh: shared bench not found; set BENCH_SHARED" >&2; exit 2; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/aioq-peer-bench.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
cp -r "$SHARED" "$TMP/bench"
chmod -R u+w "$TMP/bench"
cp "$HERE/peer_aioq.py" "$TMP/bench/adapters/peer_aioq.py"
export AIOQ_SRC="${AIOQ_SRC:-$ROOT}"  # e.g. a `git archive` snapshot of a commit
# the harness reuses a venv while its requirements file is unchanged: write the path itself
# (not ${AIOQ_SRC}) so that another checkout gets its own install
sed "s|\${AIOQ_SRC}|$AIOQ_SRC|g" "$HERE/aioq.txt" >"$TMP/bench/requirements/aioq.txt"

export BENCH_PEERS="${BENCH_PEERS:-raw aioq streaq saq taskiq arq}"
export BENCH_RESULTS="${BENCH_RESULTS:-$HERE/RESULTS.md}"
export BENCH_RESULTS_JSON="${BENCH_RESULTS_JSON:-$HERE/results.json}"
export BENCH_COMMAND="${BENCH_COMMAND:-bash benchmarks/peer/run.sh (BENCH_PEERS=\"$BENCH_PEERS\"$(env | grep -E '^BENCH_(REPEATS|N_NOOP|N_SLEEP|N_LAT|SCENARIOS)=' | sort | sed 's/^/ /' | tr -d '\n'))}"
# compile aioq's bytecode as installing a wheel would: the editable install never writes it
# under PYTHONDONTWRITEBYTECODE=1, so every worker would compile aioq at start-up (~90 ms)
"${PYTHON:-python3}" -m compileall -q "$AIOQ_SRC/aioq" >/dev/null
echo "peer benchmark: harness copied from $SHARED to $TMP/bench; aioq from $AIOQ_SRC"
echo "peers: $BENCH_PEERS; results -> $BENCH_RESULTS"
bash "$TMP/bench/run.sh"
