"""Feature-extraction backbones: flax.linen modules returning dicts of feature maps."""
