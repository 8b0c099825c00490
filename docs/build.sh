#!/usr/bin/env bash
# Builds the documentation site into docs/_build/html: `bash docs/build.sh` from anywhere.
# Needs the docs extra (pip install -e '.[all,docs]') and, once, the npm registry (MathJax's
# tex-svg.js, checked against its SHA-256, so the pages typeset math offline).
# Warnings are errors; every example in examples/ runs (MINIGD_DOCS_LONG=1 runs the long ones too).
set -euo pipefail
cd "$(dirname "$0")"

MATHJAX_VERSION=3.2.2
MATHJAX_SHA256=d4295dc33744836935c1399feece5159577b34c5c8ffb9f1c6324cd82e03a882
target=_static/mathjax/tex-svg.js
if [ ! -f "$target" ] || ! echo "$MATHJAX_SHA256  $target" | sha256sum --check --status; then
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  python -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
    "https://registry.npmjs.org/mathjax/-/mathjax-$MATHJAX_VERSION.tgz" \
    "$scratch/mathjax-$MATHJAX_VERSION.tgz"
  tar -xzf "$scratch/mathjax-$MATHJAX_VERSION.tgz" -C "$scratch" package/es5/tex-svg.js
  if ! echo "$MATHJAX_SHA256  $scratch/package/es5/tex-svg.js" | sha256sum --check --status; then
    echo "docs/build.sh: mathjax@$MATHJAX_VERSION's tex-svg.js does not match its checksum" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$target")"
  mv "$scratch/package/es5/tex-svg.js" "$target.partial"
  mv "$target.partial" "$target"
fi

export MPLBACKEND=Agg OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
python -m sphinx -W --keep-going -q -b html . _build/html
echo "docs/build.sh: the site is in $(pwd)/_build/html/index.html"
