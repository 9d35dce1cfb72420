"""FSDP (issue 18, item 3): the train state sharded over an `fsdp` mesh axis trains like
the replicated one (same final parameters within float rounding: the sharded step
all-gathers parameters and reduce-scatters gradients, another summation order)."""
import jax
import numpy as np
import pytest

from jaxseg.errors import ConfigError
from jaxseg.train import loop


def test_fsdp_sharded_state_trains_like_the_replicated_one(tiny_config, tmp_path):
  with tiny_config.unlocked():
    tiny_config.num_steps, tiny_config.eval_every = 3, 3
  devices = jax.devices()[:4]
  replicated = loop.train_and_evaluate(tiny_config, str(tmp_path / "replicated"),
                                       mesh=loop.make_mesh(devices))
  sharded = loop.train_and_evaluate(tiny_config, str(tmp_path / "fsdp"),
                                    mesh=loop.make_mesh(devices, fsdp=2))
  want, got = replicated["state"], sharded["state"]
  specs = {str(x.sharding.spec) for x in jax.tree.leaves(got.params)}
  assert any("fsdp" in spec for spec in specs)  # the kernels are split ...
  kernel = max(jax.tree.leaves(got.params), key=lambda x: x.size)
  assert kernel.addressable_shards[0].data.size == kernel.size // 2  # ... in halves
  moments = [x for x in jax.tree.leaves(got.opt_state) if x.shape == kernel.shape]
  assert moments and all(m.sharding == kernel.sharding for m in moments)
  assert int(got.step) == int(want.step) == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(b), np.asarray(a),
                                                       rtol=1e-5, atol=1e-6),
               want.params, got.params)
  assert sharded["eval"]["mIoU"] == pytest.approx(replicated["eval"]["mIoU"], rel=1e-5)


def test_fsdp_must_divide_the_devices():
  with pytest.raises(ConfigError, match="--fsdp=3 does not divide the 4 devices"):
    loop.make_mesh(jax.devices()[:4], fsdp=3)
