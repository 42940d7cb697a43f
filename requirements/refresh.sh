#!/usr/bin/env bash
# Refresh the lock files from pyproject.toml's ranges: the newest releases they
# allow today, with the hashes of every file of each release.
#
#   requirements/refresh.sh            re-resolve everything
#   requirements/refresh.sh -P NAME    move only NAME to its newest release
#
# Then run the whole suite (`./setup.sh --dev && .venv/bin/python -m pytest`)
# and commit the lock files with what changed and why. The resolver is uv, at
# the version (and hashes) in requirements/uv.txt, in a throw-away venv.
set -euo pipefail
cd "$(dirname "$0")/.."

tool=$(mktemp -d)
trap 'rm -rf "$tool"' EXIT
"${PYTHON:-python3}" -m venv "$tool"
"$tool/bin/python" -m pip install -q --require-hashes -r requirements/uv.txt

compile() {
	"$tool/bin/uv" pip compile --quiet --generate-hashes --universal --python-version 3.11 \
		--no-emit-index-url --custom-compile-command requirements/refresh.sh "$@"
}
# The test set first; the app's set is held to the same versions.
if [ "$#" = 0 ]; then set -- --upgrade; fi
compile pyproject.toml requirements/tools.in --extra test -o requirements/test.txt "$@"
compile pyproject.toml requirements/tools.in -c requirements/test.txt -o requirements/app.txt
compile requirements/uv.in -o requirements/uv.txt
echo "refreshed: requirements/app.txt requirements/test.txt requirements/uv.txt"
