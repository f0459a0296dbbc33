"""svrl_libero: real LIBERO as an svrl env backend (`env.backend: libero`), run in LIBERO's own interpreter.

Importing this package is cheap and imports no LIBERO: `backend` holds the svrl side (tasks, the VectorEnv
factory, the catalog entry point), `worker` runs under LIBERO's python. See docs/libero.md.
"""
