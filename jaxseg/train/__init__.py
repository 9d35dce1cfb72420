"""Task-agnostic training: state, optimizers, mesh/sharding, checkpoints, loop, logging."""
