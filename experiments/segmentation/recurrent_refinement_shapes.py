"""Multi-scale input + iterative refinement (Pinheiro & Collobert ICML 2014) on shapes:
one small network sees the image at scales 1, 1/2, 1/4 together with its own previous
class probabilities, and is applied `refinement_steps` times with shared weights.

`model.deep_supervision=True` adds the loss of every step (the paper trains each step).
No batch norm (`norm=False`): one set of BN layers would be shared by every step and
scale, whose inputs differ a lot, so its running averages would fit none of them.
Variants `:small` (ablations), `:tiny` (tests).
"""
from jaxseg import configs


def get_config(arg=None):
  return configs.segmentation_shapes(
      arg,
      model=dict(name="recurrent_refinement", refinement_steps=3, scales=(1.0, 0.5, 0.25),
                 combine="concat", features=32, num_convs=3, initial_probs="uniform",
                 deep_supervision=True, conv_type="standard", norm=False, dropout_rate=0.0),
      tiny_model=dict(refinement_steps=2, scales=(1.0, 0.5), features=4, num_convs=2),
      small_model=dict(features=24)).lock()
