"""The DynaFlow NPZ format, kept importable under its old name: it lives in demos/npz.py."""
from demos.npz import *  # noqa: F401,F403
from demos.npz import FORMAT, FORMAT_VERSION, PER_EPISODE, env_config, npz_arrays, state_names, write_npz  # noqa: F401
