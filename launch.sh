#!/usr/bin/env bash
# The one entry point of jaxseg: sets up .venv when it is missing or stale, then runs
#   train CONFIG [flags]   train (and evaluate) an experiment config; resumes its workdir
#   eval CONFIG [flags]    evaluate the latest checkpoint of the workdir
#   ablate ABLATION [flags] run an ablation (experiments/ablations/*.py): its runs, then
#                          a table, CSV and plot in docs/ablations/<name>/
#   test [pytest args]     run the test suite
#   bench [flags]          train-step benchmarks: U-Net; --suite adds FCN-8s, DeepLab v3+
#   setup                  only create/refresh .venv
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.jaxseg-setup

setup() {
  local want
  want=$(cat pyproject.toml launch.sh | sha256sum | cut -d' ' -f1)
  if [[ -x $VENV/bin/python && -f $STAMP && "$(cat "$STAMP")" == "$want" ]]; then
    return
  fi
  echo "launch.sh: setting up $VENV (pip install -e '.[test,bench]'; first time takes a few minutes)" >&2
  [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test,bench]"
  echo "$want" > "$STAMP"
  echo "launch.sh: $VENV is ready" >&2
}

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case "$cmd" in
  train|eval)
    if [[ $# -lt 1 || "$1" == -* ]]; then
      echo "usage: ./launch.sh $cmd CONFIG [--workdir=DIR] [--config.KEY=VALUE ...]" >&2; exit 2
    fi
    config=$1; shift
    setup
    exec "$VENV/bin/python" -m jaxseg.main --mode="$cmd" --config="$config" "$@" ;;
  ablate)
    if [[ $# -lt 1 || "$1" == -* ]]; then
      echo "usage: ./launch.sh ablate ABLATION [--workdir=DIR] [--report_dir=DIR] [--only=RUN,...]" >&2
      exit 2
    fi
    ablation=$1; shift
    setup
    exec "$VENV/bin/python" -m jaxseg.ablate --ablation="$ablation" "$@" ;;
  test)
    setup
    exec "$VENV/bin/python" -m pytest -q "$@" ;;
  bench)
    setup
    exec "$VENV/bin/python" bench/train_step.py "$@" ;;
  setup)
    setup ;;
  ""|-h|--help|help)
    usage ;;
  *)
    echo "launch.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
esac
