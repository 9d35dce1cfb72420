"""The fault table's fast variant (bench/faults.py --fast, issue 20): the README's commands
as subprocesses under kill -9 and SIGTERM (exact resume), a corrupt latest checkpoint
(fallback), malformed inputs (one `jaxseg: error:` line, exit 2, no workdir changed) and
divergence (every kept checkpoint finite). The full table: docs/faults.md."""
import os
import re
import subprocess
import sys
import tempfile

from conftest import REPO


def _clean_env():
  """The environment of a user's shell: not the test session's forced CPU devices."""
  env = dict(os.environ)
  for key in ("JAX_PLATFORMS", "XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL", "JAXSEG_CACHE_DIR"):
    env.pop(key, None)
  return env


def test_fault_table_fast(tmp_path):
  output = tmp_path / "faults.md"
  # A cache shared with earlier bench runs (so the subprocesses compile each program once).
  cache = os.path.join(tempfile.gettempdir(), "jaxseg-faults-xla-cache")
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "bench", "faults.py"), "--fast", "--direct",
       f"--output={output}", f"--cache_dir={cache}"],
      cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=900, check=False)
  table = output.read_text() if output.exists() else ""
  assert result.returncode == 0, (table or result.stdout[-6000:]) + result.stderr[-3000:]
  rows = re.findall(r"^\| (R\d[.\w]*) \|.*\| (PASS|\*\*FAIL\*\*|SKIP) \|$", table, re.M)
  ids = [rid for rid, _ in rows]
  assert all(result == "PASS" for _, result in rows), table
  for group, at_least in (("R0", 1), ("R1", 1), ("R2", 2), ("R3", 1), ("R4", 8), ("R5", 1)):
    assert sum(rid.split(".")[0] == group for rid in ids) >= at_least, (group, ids)
  assert "Traceback" not in result.stdout
