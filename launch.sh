#!/usr/bin/env bash
# The one entry point of jaxseg: sets up .venv when it is missing or stale, then runs
#   train CONFIG [flags]   train (and evaluate) an experiment config; resumes its workdir
#   eval CONFIG [flags]    evaluate the latest checkpoint of the workdir
#   predict CONFIG --input=FILE_OR_GLOB [--workdir=DIR] [--output_dir=DIR]
#                          run the workdir's checkpoint on your own images (JSON + PNG each)
#   ablate ABLATION [flags] run an ablation (experiments/ablations/*.py): its runs, then
#                          a table, CSV and plot in docs/ablations/<name>/
#   test [pytest args]     run the test suite in one xdist worker per core (installs the
#                          torch extra for the torchvision equivalence tests)
#   bench [NAME] [flags]   benchmarks in bench/: train_step (default; U-Net, --suite adds
#                          FCN-8s, DeepLab v3+), nms, roi_align, coco_eval, proposal_recall,
#                          detection (Faster R-CNN R50-FPN vs torchvision), faults
#   hyperquest CONFIG[:tiny] [--port=8080] [--host=127.0.0.1] [--workdir=runs/hyperquest]
#                          serve the HyperQuest game (page + JSON API; 127.0.0.1 by default)
#   setup                  only create/refresh .venv (and a Java runtime for METEOR)
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.jaxseg-setup

# setup [EXTRAS]: pip install -e ".[EXTRAS]" (default test,bench) unless the stamp says
# that this pyproject.toml + launch.sh were installed with at least those extras.
setup() {
  local extras=${1:-test,bench} want have="" have_extras="" extra missing=""
  want=$(cat pyproject.toml launch.sh | sha256sum | cut -d' ' -f1)
  if [[ -x $VENV/bin/python && -f $STAMP ]]; then
    read -r have have_extras < "$STAMP" || true
  fi
  for extra in ${extras//,/ }; do
    [[ ",$have_extras," == *",$extra,"* ]] || missing=1
  done
  if [[ "$have" == "$want" && -z $missing ]]; then
    return
  fi
  echo "launch.sh: setting up $VENV (pip install -e '.[$extras]'; first time takes a few minutes)" >&2
  install_java
  [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
  echo "$want $extras" > "$STAMP"
  echo "launch.sh: $VENV is ready" >&2
}

# METEOR (jaxseg.metrics.meteor, the dense-captioning metric) runs a Java jar: install a
# headless Java runtime when `java` is missing (apt-get; sudo only if not root, and only
# without a password prompt). A failure is a warning: only METEOR needs Java.
install_java() {
  command -v java >/dev/null && return
  local sudo=""
  [[ $(id -u) == 0 ]] || sudo="sudo -n"
  echo "launch.sh: installing a Java runtime for METEOR (apt-get install default-jre-headless)" >&2
  if ! { command -v apt-get >/dev/null && $sudo apt-get update -q &&
         $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q default-jre-headless; }; then
    echo "launch.sh: could not install Java; METEOR (dense captioning) needs it:" \
         "apt-get install -y default-jre-headless" >&2
  fi
}

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
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
  predict)
    if [[ $# -lt 1 || "$1" == -* ]]; then
      echo "usage: ./launch.sh predict CONFIG --input=FILE_OR_GLOB [--workdir=DIR] [--output_dir=DIR]" >&2
      exit 2
    fi
    config=$1; shift
    setup
    exec "$VENV/bin/python" -m jaxseg.predict --config="$config" "$@" ;;
  ablate)
    if [[ $# -lt 1 || "$1" == -* ]]; then
      echo "usage: ./launch.sh ablate ABLATION [--workdir=DIR] [--report_dir=DIR] [--only=RUN,...]" >&2
      exit 2
    fi
    ablation=$1; shift
    # A bare study name (rcnn_family) is experiments/ablations/<name>.py.
    if [[ ! -f $ablation && -f experiments/ablations/$ablation.py ]]; then
      ablation=experiments/ablations/$ablation.py
    fi
    setup
    exec "$VENV/bin/python" -m jaxseg.ablate --ablation="$ablation" "$@" ;;
  test)
    setup test,bench,torch
    # The whole suite runs in pytest-xdist workers, one per core (at most 4: each XLA
    # process holds ~1-2 GB); JAXSEG_TEST_WORKERS=0 runs it in this process.
    workers=${JAXSEG_TEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}
    parallel=()
    if [[ $workers -gt 1 ]]; then parallel=(-n "$workers"); fi
    exec "$VENV/bin/python" -m pytest -q "${parallel[@]}" "$@" ;;
  bench)
    script=bench/train_step.py
    if [[ $# -gt 0 && "$1" != -* ]]; then
      script=bench/$1.py; shift
      [[ -f $script ]] || { echo "launch.sh: no benchmark '$script'" >&2; exit 2; }
    fi
    setup
    exec "$VENV/bin/python" "$script" "$@" ;;
  hyperquest)
    if [[ $# -lt 1 || "$1" == -* ]]; then
      echo "usage: ./launch.sh hyperquest CONFIG[:tiny] [--port=8080] [--host=127.0.0.1] [--workdir=runs/hyperquest]" >&2
      exit 2
    fi
    config=$1; shift
    setup
    exec "$VENV/bin/python" -m jaxseg.hyperquest.server --config="$config" "$@" ;;
  setup)
    setup ;;
  ""|-h|--help|help)
    usage ;;
  *)
    echo "launch.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
esac
