"""The fast model: lowering, dataflow plans, engine, memory, energy, kernels (all numba here)."""
