# Sourced by the other scripts: make .venv with Python >= 3.11 and install the
# project into it with the given extras (torch==2.13.* comes from the wheel that
# this kind of machine keeps on disk, so no multi-GB download happens); install
# missing system tools from the distribution's packages.
install_project() {
    local extras=$1
    if [ ! -x .venv/bin/python ]; then
        python3 -c 'import sys; assert sys.version_info >= (3, 11), "need Python >= 3.11"'
        python3 -m venv .venv
    fi
    echo "== installing .[$extras] into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
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
