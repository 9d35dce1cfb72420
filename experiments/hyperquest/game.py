"""HyperQuest, the lecture's hyperparameter-tuning game (jaxseg.hyperquest).

./launch.sh hyperquest experiments/hyperquest/game.py [--port=8080] [--host=127.0.0.1]
Variant `:tiny`: 240 / 120 examples of shapes10 and the same rules (tests, smoke runs).
The rules themselves (choices, ladders, limits) are fixed: jaxseg/hyperquest/rules.py.
"""
import ml_collections
from ml_collections.config_dict import placeholder


def get_config(arg=None):
  if arg not in (None, "", "tiny"):
    raise ValueError(f"unknown config variant {arg!r}; expected 'tiny' or none")
  c = ml_collections.ConfigDict(dict(
      task="hyperquest",
      # A new game draws one of these with its seed (names of jaxseg.data.image_sources
      # with 10 classes of 32x32x3 images; catalog sets must be prepared in data_dir).
      datasets=("shapes10",),
      dataset=dict(data_dir=placeholder(str), num_train=8500, num_validation=1500),
      batch_size=32,
      eval_batch_size=500,
      stem_pool=4,  # the stem's max-pool: 32x32 -> 8x8 before the `depth` layers (speed)
      momentum=0.9,  # SGD with momentum; lr and weight decay are the game's
      widen_noise=0.1,  # Net2WiderNet's symmetry-breaking noise (relative, zero-sum)
      # The baseline: a fixed default configuration trained for as many epochs as the
      # player's game (once per dataset, cached in the workdir).
      baseline=dict(enabled=True, width=64, lr=0.01, depth=4, dropout=0.0),
      examples_per_class=4,
  ))
  if arg == "tiny":
    c.dataset.num_train, c.dataset.num_validation = 240, 120
    c.batch_size, c.eval_batch_size = 40, 60
  return c.lock()
