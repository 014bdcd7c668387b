#!/usr/bin/env bash
# Machine-specific workaround, called by .ci/run before the tests.
#
# Root's .bashrc on these machines runs `pyenv init -`, whose rehash takes a lock in
# ~/.pyenv/shims: a login shell killed mid-rehash (by an earlier run) leaves it behind, and
# every SSH login to the test bed then waits 60 s for it. Remove only a lock nobody holds.
set -euo pipefail
lock="${PYENV_ROOT:-$HOME/.pyenv}/shims/.pyenv-shim"
if [ -e "$lock" ] && ! pgrep -f pyenv-rehash >/dev/null 2>&1; then
    rm -f "$lock"
fi
