"""launch.sh's accelerator choice (JAXSEG_ACCELERATOR) in its dry run.

`JAXSEG_SETUP_DRY_RUN=1 ./launch.sh setup` prints the accelerator it chose and the pip
command it would run, and changes nothing. Each test runs a copy of launch.sh and
pyproject.toml in a temporary directory (so the repository's .venv is never looked at),
with a fake `nvidia-smi` first on PATH and a fake PCI tree for the TPU check.
"""
import os
import shutil
import stat
import subprocess

import pytest

from conftest import REPO

SYSTEM_PATH = "/usr/bin:/bin"


def _nvidia_smi(directory, cuda=None):
  """A fake nvidia-smi: the header line of a driver for `cuda`, or (None) the failure
  without a driver."""
  path = directory / "nvidia-smi"
  if cuda is None:
    body = ("echo 'NVIDIA-SMI has failed because it couldn'\"'\"'t communicate with the "
            "NVIDIA driver.'\nexit 9\n")
  else:
    body = (f"echo '| NVIDIA-SMI 580.65.06    Driver Version: 580.65.06    CUDA Version: "
            f"{cuda}     |'\n")
  path.write_text("#!/bin/sh\n" + body)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _pci_device(root, name, vendor, device):
  path = root / name
  path.mkdir(parents=True)
  (path / "vendor").write_text(vendor + "\n")
  (path / "device").write_text(device + "\n")


@pytest.fixture
def launch(tmp_path):
  """launch(*args, accelerator=None, cuda=..., pci=[(vendor, device)]) runs the copied
  launch.sh in dry-run mode; returns the CompletedProcess."""
  checkout = tmp_path / "checkout"
  checkout.mkdir()
  for name in ("launch.sh", "pyproject.toml"):
    shutil.copy2(os.path.join(REPO, name), checkout / name)

  def launch_(*args, accelerator=None, cuda="absent", pci=(), dry_run=True):
    bin_dir = tmp_path / "bin"
    shutil.rmtree(bin_dir, ignore_errors=True)
    bin_dir.mkdir()
    if cuda != "absent":
      _nvidia_smi(bin_dir, cuda)
    pci_root = tmp_path / "pci"
    shutil.rmtree(pci_root, ignore_errors=True)
    pci_root.mkdir()
    for i, (vendor, device) in enumerate(pci):
      _pci_device(pci_root, f"0000:00:{i:02x}.0", vendor, device)
    env = {"PATH": f"{bin_dir}:{SYSTEM_PATH}", "HOME": str(tmp_path),
           "JAXSEG_PCI_DEVICES": str(pci_root)}
    if dry_run:
      env["JAXSEG_SETUP_DRY_RUN"] = "1"
    if accelerator is not None:
      env["JAXSEG_ACCELERATOR"] = accelerator
    return subprocess.run(["bash", str(checkout / "launch.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)

  launch_.checkout = checkout
  return launch_


def _choice(result):
  assert result.returncode == 0, result.stderr
  lines = dict(line.split(": ", 2)[1:] for line in result.stdout.splitlines()
               if line.startswith("launch.sh: ") and line.count(": ") >= 2)
  return lines["accelerator"].split()[0], lines["pip command"]


@pytest.mark.parametrize("cuda, expected", [
    ("12.4", "cuda12"), ("12.9", "cuda12"), ("13.0", "cuda13"), ("13.1", "cuda13")])
def test_auto_picks_the_cuda_build_the_driver_supports(launch, cuda, expected):
  accelerator, pip = _choice(launch("setup", cuda=cuda))
  assert accelerator == expected
  assert pip == (".venv/bin/python -m pip install --quiet --disable-pip-version-check "
                 f"-e '.[test,bench,{expected}]'")


def test_auto_without_a_usable_driver_is_cpu(launch):
  for cuda in (None, "11.4"):  # nvidia-smi without a driver; a driver older than CUDA 12
    accelerator, pip = _choice(launch("setup", cuda=cuda))
    assert accelerator == "cpu"
    assert pip.endswith("-e '.[test,bench]'")


def test_auto_without_nvidia_smi_is_cpu(launch):
  if shutil.which("nvidia-smi", path=SYSTEM_PATH):
    pytest.skip("this machine has an nvidia-smi on the system PATH")
  result = launch("setup")
  assert _choice(result)[0] == "cpu"
  assert "auto: no NVIDIA driver (nvidia-smi) and no TPU found" in result.stdout


def test_auto_finds_a_tpu_on_the_pci_bus(launch):
  # Google's vendor id with a TPU v5e device id; a gVNIC (also Google's) is no TPU.
  accelerator, pip = _choice(launch("setup", cuda=None,
                                    pci=[("0x1af4", "0x1000"), ("0x1ae0", "0x0063")]))
  assert accelerator == "tpu" and pip.endswith("-e '.[test,bench,tpu]'")
  assert _choice(launch("setup", cuda=None, pci=[("0x1ae0", "0x0042")]))[0] == "cpu"


def test_explicit_choice_wins_and_test_keeps_its_extras(launch):
  assert _choice(launch("setup", accelerator="cuda12", cuda="13.0"))[0] == "cuda12"
  assert _choice(launch("setup", accelerator="cpu", cuda="13.0"))[0] == "cpu"
  assert _choice(launch("setup", accelerator="tpu"))[0] == "tpu"
  accelerator, pip = _choice(launch("test", accelerator="cuda13"))
  assert accelerator == "cuda13" and pip.endswith("-e '.[test,bench,torch,cuda13]'")
  accelerator, pip = _choice(launch("train", "experiments/segmentation/unet_shapes.py",
                                    cuda="12.4"))
  assert accelerator == "cuda12" and pip.endswith("-e '.[test,bench,cuda12]'")


def test_unknown_accelerator_is_one_line_before_any_setup(launch):
  for command in (["setup"], ["train", "experiments/segmentation/unet_shapes.py"]):
    for dry_run in (True, False):
      result = launch(*command, accelerator="foo", dry_run=dry_run)
      assert result.returncode == 2
      assert result.stderr == ("jaxseg: error: JAXSEG_ACCELERATOR=foo; expected one of cpu, "
                               "cuda12, cuda13, tpu, auto\n")
      assert result.stdout == ""
  assert not (launch.checkout / ".venv").exists()


def test_dry_run_changes_nothing_and_sees_a_switch(launch):
  result = launch("setup", cuda="12.4")
  assert "would be set up" in result.stdout
  assert not (launch.checkout / ".venv").exists()
  # A .venv stamped for cuda12 by this launch.sh + pyproject.toml: up to date for cuda12;
  # switching to cpu would uninstall the CUDA 12 plugin.
  venv = launch.checkout / ".venv"
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")
  (venv / "bin" / "python").chmod(0o755)
  digest = subprocess.run(
      "cat pyproject.toml launch.sh | sha256sum | cut -d' ' -f1", shell=True,
      cwd=launch.checkout, capture_output=True, text=True, check=True).stdout.strip()
  stamp = venv / ".jaxseg-setup"
  stamp.write_text(f"{digest} test,bench cuda12\n")
  before = {p: p.stat().st_mtime_ns for p in venv.rglob("*")}
  result = launch("setup", cuda="12.4")
  assert _choice(result)[0] == "cuda12"
  assert "launch.sh: dry run: .venv is up to date; nothing changed" in result.stdout
  assert "uninstall" not in result.stdout
  result = launch("setup", accelerator="cpu", cuda="12.4")
  assert _choice(result)[0] == "cpu"
  assert "launch.sh: would uninstall: jax-cuda12-plugin jax-cuda12-pjrt" in result.stdout
  assert "would be set up" in result.stdout
  assert {p: p.stat().st_mtime_ns for p in venv.rglob("*")} == before
  assert stamp.read_text() == f"{digest} test,bench cuda12\n"
