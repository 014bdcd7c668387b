#!/usr/bin/env bash
# Install what sshdeploy and its local test bed need on a fresh Debian machine (as root).
#   bash scripts/install.sh          # the package, sshd and iproute2 (for the test bed)
#   bash scripts/install.sh --test   # the same plus the test/lint tools
#   bash scripts/install.sh --system-only   # only the Debian packages (CI's extra legs)
# Run it inside a virtual environment to install there: `python` is the active one.
set -euo pipefail
cd "$(dirname "$0")/.."

extra=""
[ "${1:-}" = "--test" ] && extra="[test]"

need=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: needs root to apt-get install ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ "${1:-}" = "--system-only" ] && exit 0
python -m pip install -q --disable-pip-version-check -e ".${extra}"
