# Shared by ci/test.sh and ci/bench.sh: a virtualenv with everything pystack
# needs, the Cython fast path built in place, on a fresh Debian machine that
# has python3, gcc and root.  Sourced, not run.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PYSTACK_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
cd "$ROOT"

# numpy (the TAP batch buffers) would start an OpenBLAS thread pool we never
# use; on a 2-core machine those threads only add noise to the figures.
export OPENBLAS_NUM_THREADS=1

say() { printf '\n== %s\n' "$*"; }

# Debian packages the tests and demos use.  Installed only when missing, and
# only when we are root on a Debian-like system; otherwise we say what to do.
DEBIAN_PACKAGES=(python3-venv python3-dev tshark netcat-openbsd iproute2 iputils-ping curl wget)

need_debian_packages() {
    local missing=() p
    for p in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    # python3-venv / python3-dev matter only for the Debian python3; a python3
    # built elsewhere (pyenv) carries its own venv module and headers.
    if "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
        missing=("${missing[@]/python3-venv}")
    fi
    if [ -f "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then
        missing=("${missing[@]/python3-dev}")
    fi
    local out=() m
    for m in "${missing[@]}"; do [ -n "$m" ] && out+=("$m"); done
    echo "${out[@]:-}"
}

install_debian_packages() {
    local missing
    missing=$(need_debian_packages)
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "pystack: missing Debian packages: $missing (run as root, or: sudo apt-get install $missing)" >&2
        return 0
    fi
    say "installing Debian packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

make_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating virtualenv $VENV"
        "$PY" -m venv "$VENV"
    fi
    say "installing Python packages"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "setuptools>=65" wheel "Cython>=3" "numpy>=1.26"
    # --no-build-isolation: build against the Cython/numpy just installed.  The
    # editable install compiles the extensions in place, so the tree itself
    # imports with the fast path; check_fast_path says which build loaded.
    say "building pystack and its Cython fast path"
    "$VENV/bin/python" -m pip install -q --no-build-isolation -e ".[test]"
}

check_fast_path() {
    "$VENV/bin/python" - <<'PY'
import sys, pystack, pystack._accel as a
print(f"pystack implementation: {a.IMPLEMENTATION} ({a.REASON})")
if a.IMPLEMENTATION != "c":
    sys.exit("pystack: the Cython fast path did not build or load; see the build output above")
PY
}
