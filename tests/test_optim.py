"""Learning-rate schedules and optimizer construction."""
import ml_collections
import pytest

from jaxseg.errors import ConfigError
from jaxseg.train.optim import make_optimizer, make_schedule


def _config(**overrides):
  c = ml_collections.ConfigDict(dict(
      name="sgd", lr=0.1, schedule="cosine", warmup_steps=10, final_lr_fraction=0.0,
      decay_steps=(), decay_factor=0.1, momentum=0.9, nesterov=False, b1=0.9, b2=0.999,
      weight_decay=0.0, grad_clip_norm=0.0))
  c.update(overrides)
  return c


def test_warmup_then_cosine():
  s = make_schedule(_config(), num_steps=110)
  assert float(s(0)) == pytest.approx(0.0)
  assert float(s(5)) == pytest.approx(0.05)
  assert float(s(10)) == pytest.approx(0.1)
  assert float(s(60)) == pytest.approx(0.05, rel=1e-5)  # half way through the cosine
  assert float(s(110)) == pytest.approx(0.0, abs=1e-7)


def test_step_decay():
  s = make_schedule(_config(schedule="step", warmup_steps=0, decay_steps=(30, 60)), 100)
  assert [float(s(t)) for t in (0, 29, 30, 59, 60, 99)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


@pytest.mark.parametrize("field,value", [("name", "adagrad"), ("schedule", "linear")])
def test_unknown_names_are_config_errors(field, value):
  with pytest.raises(ConfigError, match=value):
    make_optimizer(_config(**{field: value}), 10)
