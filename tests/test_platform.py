"""jaxseg's XLA:CPU setting is applied at import and never overrides the user's own."""
import os

from jaxseg import platform


def test_setting_is_in_effect_in_this_process():
  assert "--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce" in os.environ["XLA_FLAGS"]


def test_user_setting_wins(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
  assert not platform.configure_xla_cpu()
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=individual_dot"


def test_compiler_options_spell_out_library_fusion_types():
  assert platform.cpu_compiler_options(("individual_dot", "reduce")) == {
      "xla_cpu_experimental_ynn_fusion_type":
          "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
