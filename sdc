#!/usr/bin/env bash
# EMM SDC entry point. Creates/updates the virtualenv on first use, then:
#   ./sdc demo         run the SDC's main job end to end on embedded services and print a summary
#   ./sdc test [args]  run the whole test suite (pytest args pass through); installs podman & co. when it
#                      can and requires the container tests (EMM_SKIP_CONTAINERS=1 ./sdc test: skip them)
#   ./sdc standalone   a local SDC that keeps its data (Airflow on embedded services; --fresh resets it)
#   ./sdc deliver ...  more synthetic data for a running standalone;  ./sdc migrate: catalog migrations
#   ./sdc airflow ...  the Airflow CLI on the running standalone;  ./sdc check-config: validate YAMLs
#   ./sdc api          the science-files API alone (it is also served by Airflow's API server at /emm/api)
#   ./sdc bench        benchmarks (ratios against baselines measured in the same run; starts podman if there)
#   ./sdc build-images the reference ITF processor images (podman or docker);  ./sdc promote / images
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
want=$(cat requirements.txt requirements-dev.txt constraints.txt | sha256sum | cut -c1-64)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$want" ]; then
  echo "sdc: installing pinned requirements into $VENV (first run takes a few minutes)..." >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt -c constraints.txt
  echo "$want" > "$VENV/.installed"
fi
export PYTHONPATH="$PWD/plugins:$PWD/devtools${PYTHONPATH:+:$PYTHONPATH}"
cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  test) exec scripts/run-tests "$@" ;;
  build-images) exec scripts/build-images "$@" ;;
  bench)
    # The runner benchmark needs a Docker-API engine: start podman's when podman is here (it skips otherwise).
    if [ -z "${DOCKER_HOST:-}" ] && command -v podman >/dev/null 2>&1; then
      if host=$(scripts/container-engine); then export DOCKER_HOST=$host
      else echo "sdc: podman's service did not start; the runner benchmark will be skipped" >&2; fi
    fi
    rc=0
    for b in bench/*.py; do echo "== $b"; "$VENV/bin/python" "$b" "$@" || rc=1; done
    exit $rc ;;
  help|-h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) exec "$VENV/bin/python" -m emm_dev.cli "$cmd" "$@" ;;
esac
