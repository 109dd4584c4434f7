"""Training: explicit state, the pure step, data parallelism, optimiser, loop."""
