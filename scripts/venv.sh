# Sourced by the other scripts: make .venv with Python >= 3.11 and install the
# project into it with the given extras; install missing system tools from the
# distribution's packages.
#
# uv installs the packages: several times faster than pip here. torch==2.13.0+cpu
# comes from the wheel this kind of machine keeps in
# /opt/wheels (pip finds it through the machine's pip.conf; uv is told), so no
# multi-GB CUDA build is downloaded.
TORCH_WHEELS=${TORCH_WHEELS:-/opt/wheels}

# uv_install PYTHON ARGS...: `uv pip install ARGS` into PYTHON's environment (uv is
# installed beside it first, from the package registry, when it is missing).
uv_install() {
    local python=$1; shift
    local uv
    uv="$(dirname "$python")/uv"
    [ -x "$uv" ] || "$python" -m pip install --quiet --disable-pip-version-check "uv>=0.9" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    # Compiled now: where PYTHONDONTWRITEBYTECODE is set (as on these machines) nothing
    # is compiled later, and every process (the tests start many) would pay the
    # compilation of torch's modules at each import.
    "$uv" pip install --quiet --compile-bytecode --python "$python" "$@"
}

install_project() {
    local extras=$1
    if [ ! -x .venv/bin/python ]; then
        python3 -c 'import sys; assert sys.version_info >= (3, 11), "need Python >= 3.11"'
        python3 -m venv .venv
    fi
    echo "== installing .[$extras] into .venv"
    if [[ ",$extras," == *,train,* ]] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
        local local_torch=()
        [ -d "$TORCH_WHEELS" ] && local_torch=(--find-links "$TORCH_WHEELS")
        uv_install .venv/bin/python "${local_torch[@]}" "torch==2.13.0+cpu"
    fi
    uv_install .venv/bin/python -e ".[$extras]"
}

# install_system_packages COMMAND=PACKAGE ...: apt-get installs PACKAGE when COMMAND
# is not on the PATH (one update and one install for all of them).
install_system_packages() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
