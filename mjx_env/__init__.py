"""The Go2 locomotion task in JAX, on MJX or C MuJoCo physics."""
import os

# JAX and torch share one GPU: JAX must not grab 75% of its memory at start-up.
# Read by JAX when its GPU backend starts, so it is set before anything touches JAX.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
