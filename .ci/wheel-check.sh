#!/usr/bin/env bash
# An installed irkit must work without the checkout: build the sdist and the wheel, install the
# wheel into a fresh venv outside the checkout with that venv's OWN pip (no upgrade first: Python
# 3.11 and Debian 12 ship pip 23.2, whose resolver must manage the dependency floors), then run
# the whole demo and verify its record from there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
work=$(mktemp -d /tmp/irkit-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT
trap 'exit 143' TERM  # make test stops a background wheel check this way: still clean up
trap 'exit 130' INT
start=$(date +%s)

# Without --sdist/--wheel, build makes the sdist and then the wheel FROM it: what ships is what works,
# and nothing is built inside the checkout.
if ! "$PY" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1; then
    tail -30 "$work/build.log" >&2
    echo "wheel-check: python -m build failed" >&2
    exit 1
fi
# Only sources and declared data ship: a stray byte-code cache or checkout file in the wheel is a packaging bug.
if stray=$(python3 -m zipfile -l "$work"/dist/irkit-*.whl | grep -E '__pycache__|\.pyc |/\.'); then
    echo "$stray" >&2
    echo "wheel-check: the wheel ships files that are not irkit's sources or data (above)" >&2
    exit 1
fi
python3 -m venv "$work/venv"
echo "wheel-check: built $(cd "$work/dist" && ls | tr '\n' ' '); installing with $("$work/venv/bin/pip" --version | cut -d' ' -f1-2)"
# --no-compile: byte-compiling all ~140 installed distributions costs about a CPU minute, most of it for
# modules the demo never imports; those it imports are compiled as it imports them (below).
"$work/venv/bin/pip" install --quiet --disable-pip-version-check --no-compile "$work"/dist/irkit-*.whl 2>&1 | grep -v "^WARNING: Location" || true
"$work/venv/bin/python" -c 'import irkit' || { echo "wheel-check: the wheel did not install" >&2; exit 1; }

cd "$work"  # nothing of the checkout is on any path from here on
# Nothing was byte-compiled at install: let the first import write the .pyc (into this throwaway venv), or
# every kernel of the demo would compile pandas and matplotlib again.
unset PYTHONDONTWRITEBYTECODE
"$work/venv/bin/irkit" demo --no-progress --records "$work/reports" >"$work/demo.log" 2>&1 || {
    tail -30 "$work/demo.log" >&2
    echo "wheel-check: irkit demo failed from the installed wheel" >&2
    exit 1
}
incident=$(cd "$work/reports" && ls -d INC-* | head -1)
"$work/venv/bin/irkit" verify "$incident" --records "$work/reports"
echo "wheel-check: wheel install, demo and verify passed outside the checkout in $(( $(date +%s) - start )) s"
