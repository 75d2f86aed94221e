#!/usr/bin/env bash
# The test command (README): creates .venv, installs everything, builds the
# Cython fast path, runs every test.  Run as root so the tests that need a
# TAP device and a network namespace run (each creates and removes its own).
# Extra arguments go to pytest, e.g. `bash ci/test.sh -k checksum`.
source "$(dirname "$0")/common.sh"

install_debian_packages
make_venv
check_fast_path

if [ "$(id -u)" != 0 ]; then
    echo "pystack: not root: tests that need a TAP device / network namespace will be skipped" >&2
fi

say "running the tests"
export PYSTACK_EXPECT_EXTENSIONS=1   # a c-implementation test fails, never skips
export PYSTACK_FULL_SIM=${PYSTACK_FULL_SIM:-1}   # TCP simulation: every loss level x 20 seeds, 10 MiB each way
set +e
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
status=$?
set -e
case $status in
    0) echo "pystack: all tests passed" ;;
    5) echo "pystack: pytest ran no test: failing" >&2; status=1 ;;
    *) echo "pystack: tests failed (pytest exit $status)" >&2 ;;
esac
exit $status
