#!/bin/sh
# Install the reference processors' Python dependencies into an image, at build time.
# Used by processors/Containerfile; see processors/README.md ("Building the images").
#
# Only what the base image lacks is installed:
#   1. every wheel in /tmp/wheels (copied from processors/wheels/) is unpacked into
#      /opt/emm/vendor (on PYTHONPATH): no pip and no network needed;
#   2. anything still missing is installed with pip from the package index;
#   3. the imports are checked, and the build fails with a clear message if one is missing.
set -eu

VENDOR=${EMM_VENDOR_DIR:-/opt/emm/vendor}
WHEELS=${EMM_WHEELS_DIR:-/tmp/wheels}
# module:distribution pairs (ccsdspy is pure Python; it needs numpy, pyyaml, appdirs, bitstruct;
# boto3 serves emmref/stage.py for batch jobs)
REQUIRED="numpy:numpy astropy:astropy PIL:pillow yaml:pyyaml appdirs:appdirs bitstruct:bitstruct ccsdspy:ccsdspy boto3:boto3"

mkdir -p "$VENDOR"
export PYTHONPATH="$VENDOR"

importable() {
    # ccsdspy and astropy write config directories on import: keep them out of the image
    scratch=$(mktemp -d)
    if HOME="$scratch" ccsdspy_CONFIGDIR="$scratch/ccsdspy" python3 -c "import $1" >/dev/null 2>&1; then
        rm -rf "$scratch"; return 0
    fi
    rm -rf "$scratch"; return 1
}

missing() {
    out=""
    for pair in $REQUIRED; do
        importable "${pair%%:*}" || out="$out ${pair#*:}"
    done
    echo "$out"
}

for wheel in "$WHEELS"/*.whl; do
    [ -e "$wheel" ] || continue
    echo "unpacking $(basename "$wheel") into $VENDOR"
    python3 -m zipfile -e "$wheel" "$VENDOR"
done

need=$(missing)
if [ -n "$need" ]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "error: the base image lacks$need and has no pip; put their wheels in processors/wheels/" >&2
        exit 1
    fi
    echo "installing from the package index:$need"
    # --break-system-packages: Debian's python3 is "externally managed" (PEP 668); this is an image.
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --disable-pip-version-check $need
fi

need=$(missing)
if [ -n "$need" ]; then
    echo "error: still missing after installation:$need" >&2
    exit 1
fi
find "$VENDOR" -name __pycache__ -prune -exec rm -rf {} +
echo "dependencies ready: $(python3 --version 2>&1), vendored: $(ls "$VENDOR" | grep -c dist-info) distribution(s)"
