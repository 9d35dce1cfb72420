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
#                          detection, faults, input_pipeline, compile_time, time_to_accuracy
#   hyperquest CONFIG[:tiny] [--port=8080] [--host=127.0.0.1] [--workdir=runs/hyperquest]
#                          serve the HyperQuest game (page + JSON API; 127.0.0.1 by default)
#   setup                  only create/refresh .venv (and a Java runtime for METEOR)
# JAXSEG_ACCELERATOR=auto|cpu|cuda12|cuda13|tpu: the jax build that setup installs (the
#   pyproject extra of that name; cpu: none). auto (the default): cuda13 or cuda12 by the
#   CUDA version of the driver that nvidia-smi reports (>= 13: cuda13), tpu on a Cloud TPU
#   VM (a TPU on the PCI bus, as jax detects it), else cpu. Changing it reinstalls.
#   `test` runs on CPU devices whatever the build (tests/conftest.py sets JAX_PLATFORMS=cpu).
# JAXSEG_SETUP_DRY_RUN=1: print the accelerator chosen and the pip command, change nothing.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PYTHON=${PYTHON:-python3}
STAMP=$VENV/.jaxseg-setup

ACCELERATORS="cpu, cuda12, cuda13, tpu, auto"
# An accelerator's packages beyond the CPU build (uninstalled when switching away from it).
accelerator_packages() {
  case "$1" in
    cuda12|cuda13) echo "jax-$1-plugin jax-$1-pjrt" ;;
    tpu) echo "libtpu" ;;
  esac
}
# TPUs on the PCI bus: Google's vendor id and the TPU device ids of jax's hardware_utils
# (v2/v3, v4, v5p, v5e, v6e, 7x); JAXSEG_PCI_DEVICES lets the tests use a fake tree.
PCI_DEVICES=${JAXSEG_PCI_DEVICES:-/sys/bus/pci/devices}
TPU_PCI_IDS=" 0x0027 0x0056 0x005e 0x0062 0x0063 0x006f 0x0076 "

has_tpu() {
  local dev
  for dev in "$PCI_DEVICES"/*; do
    [[ -r $dev/vendor && -r $dev/device ]] || continue
    [[ $(<"$dev/vendor") == 0x1ae0 && $TPU_PCI_IDS == *" $(<"$dev/device") "* ]] && return 0
  done
  return 1
}

# resolve_accelerator: sets ACCELERATOR (cpu|cuda12|cuda13|tpu) and ACCELERATOR_WHY from
# JAXSEG_ACCELERATOR (default auto); an unknown value is an error (exit 2) before any pip work.
resolve_accelerator() {
  local value=${JAXSEG_ACCELERATOR:-auto} cuda=""
  case "$value" in
    cpu|cuda12|cuda13|tpu)
      ACCELERATOR=$value ACCELERATOR_WHY="JAXSEG_ACCELERATOR=$value"; return ;;
    auto) ;;
    *) echo "jaxseg: error: JAXSEG_ACCELERATOR=$value; expected one of $ACCELERATORS" >&2
       exit 2 ;;
  esac
  if command -v nvidia-smi >/dev/null; then
    # nvidia-smi's header: "... Driver Version: 550.54.15   CUDA Version: 12.4 ..."; without
    # a working driver it fails and prints no CUDA version.
    cuda=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -n 1) || true
  fi
  if [[ -n $cuda ]]; then
    ACCELERATOR_WHY="auto: nvidia-smi reports a driver for CUDA $cuda"
    if (( ${cuda%%.*} >= 13 )); then ACCELERATOR=cuda13
    elif (( ${cuda%%.*} == 12 )); then ACCELERATOR=cuda12
    else
      ACCELERATOR=cpu ACCELERATOR_WHY+="; jax needs CUDA 12 or newer (update the driver)"
    fi
  elif has_tpu; then
    ACCELERATOR=tpu ACCELERATOR_WHY="auto: a Cloud TPU on the PCI bus"
  else
    ACCELERATOR=cpu ACCELERATOR_WHY="auto: no NVIDIA driver (nvidia-smi) and no TPU found"
  fi
}

# setup [EXTRAS]: pip install -e ".[EXTRAS,<accelerator>]" (default test,bench) unless the
# stamp says that this pyproject.toml + launch.sh were installed with at least those extras
# for the same accelerator.
setup() {
  local extras=${1:-test,bench} want have="" have_extras="" have_accelerator="" extra
  local missing="" pip_extras remove=""
  resolve_accelerator
  pip_extras=$extras
  [[ $ACCELERATOR == cpu ]] || pip_extras+=",$ACCELERATOR"
  want=$(cat pyproject.toml launch.sh | sha256sum | cut -d' ' -f1)
  if [[ -x $VENV/bin/python && -f $STAMP ]]; then
    read -r have have_extras have_accelerator < "$STAMP" || true
  fi
  for extra in ${extras//,/ }; do
    [[ ",$have_extras," == *",$extra,"* ]] || missing=1
  done
  if [[ -n $have_accelerator && $have_accelerator != "$ACCELERATOR" ]]; then
    remove=$(accelerator_packages "$have_accelerator")
  fi
  local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$pip_extras]")
  if [[ ${JAXSEG_SETUP_DRY_RUN:-0} != 0 ]]; then
    echo "launch.sh: accelerator: $ACCELERATOR ($ACCELERATOR_WHY)"
    [[ -z $remove ]] || echo "launch.sh: would uninstall: $remove"
    echo "launch.sh: pip command: ${pip[*]:0:${#pip[@]}-1} '${pip[${#pip[@]}-1]}'"
    if [[ "$have" == "$want" && -z $missing && $have_accelerator == "$ACCELERATOR" ]]; then
      echo "launch.sh: dry run: $VENV is up to date; nothing changed"
    else
      echo "launch.sh: dry run: $VENV would be set up with that command; nothing changed"
    fi
    exit 0
  fi
  if [[ "$have" == "$want" && -z $missing && $have_accelerator == "$ACCELERATOR" ]]; then
    return
  fi
  echo "launch.sh: setting up $VENV for $ACCELERATOR ($ACCELERATOR_WHY): pip install -e" \
       "'.[$pip_extras]'; first time takes a few minutes" >&2
  install_java
  [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  if [[ -n $remove ]]; then
    # shellcheck disable=SC2086  # a list of package names
    "$VENV/bin/python" -m pip uninstall --quiet --yes $remove 2>/dev/null || true
  fi
  "${pip[@]}"
  echo "$want $extras $ACCELERATOR" > "$STAMP"
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
  # The header comment above (every line up to the first that is not a comment).
  sed -n '2,/^[^#]/{/^#/p;}' "$0" | sed 's/^# \{0,1\}//'
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
      echo "usage: ./launch.sh ablate ABLATION [--workdir=DIR] [--report_dir=DIR] [--only=RUN,...] [--seeds=N] [--shard=i/n | --merge=DIR,...]" >&2
      exit 2
    fi
    ablation=$1; shift
    # HyperQuest's agents' study plays games rather than training configs: its own module.
    if [[ $ablation == hyperquest_agents ]]; then
      setup
      exec "$VENV/bin/python" -m jaxseg.hyperquest.agents_study \
        --config=experiments/hyperquest/game.py "$@"
    fi
    # A bare study name (rcnn_family) is experiments/ablations/<name>.py.
    if [[ ! -f $ablation && -f experiments/ablations/$ablation.py ]]; then
      ablation=experiments/ablations/$ablation.py
    fi
    setup
    exec "$VENV/bin/python" -m jaxseg.ablate --ablation="$ablation" "$@" ;;
  test)
    setup test,bench,torch
    # The whole suite runs in pytest-xdist workers, one per core (at most 4: each XLA
    # process holds ~1-2 GB); JAXSEG_TEST_WORKERS=0 runs it in this process. Work stealing:
    # an idle worker takes pending tests from the other, so no long test is left queued
    # behind another at the end.
    workers=${JAXSEG_TEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}
    parallel=()
    if [[ $workers -gt 1 ]]; then parallel=(-n "$workers" --dist worksteal); fi
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
