#!/usr/bin/env bash
# The main job (README): builds everything like ci/test.sh, then runs
# `pystack demo`: a 10 MiB file through pystack TCP each way with nc, SHA-256
# checked, MB/s beside the kernel's own TCP over a veth pair.  Everything it
# makes lives in network namespaces it creates and removes.  Run as root.
# Extra arguments go to `pystack demo` (e.g. --size 100MiB).
source "$(dirname "$0")/common.sh"

install_debian_packages
make_venv
check_fast_path

say "pystack demo"
exec "$VENV/bin/pystack" demo "$@"
