#!/usr/bin/env bash
# The main job (README), until the daemon exists: builds everything like
# ci/test.sh, runs the benchmarks (fast path vs pure twin vs baselines; the
# TAP benchmark in a network namespace it creates and removes) and prints the
# figures as ratios.  Run as root.  Extra arguments go to pytest.
source "$(dirname "$0")/common.sh"

install_debian_packages
make_venv
check_fast_path

out="$ROOT/out"
mkdir -p "$out"
json="$out/benchmarks.json"
say "running the benchmarks (a few minutes; results in $json)"
"$VENV/bin/python" -m pytest -p no:cacheprovider benchmarks/ -q \
    --benchmark-json="$json" --benchmark-columns=median,iqr,rounds \
    --benchmark-sort=name "$@"
say "figures (medians)"
"$VENV/bin/python" benchmarks/report.py "$json"
