"""play.py --video on a machine without the headless OpenGL library: one line, exit code 2."""
import subprocess
import sys

import pytest

from conftest import REPO

# A fresh interpreter in which the library cannot be loaded, whoever asks (play.py's check, or
# PyOpenGL when mujoco is imported): ctypes.cdll raises as the dynamic loader would.
HIDE_AND_RUN = """
import ctypes, sys
hidden = sys.argv[1]

class Hidden(ctypes.CDLL):
    def __init__(self, name, *args, **kwargs):
        if hidden in str(name):
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        super().__init__(name, *args, **kwargs)

ctypes.cdll = ctypes.LibraryLoader(Hidden)
import play
sys.exit(play.main(["--video", sys.argv[2], "--num_envs", "1", "--duration", "0.1", "--no-progress"]))
"""


@pytest.mark.parametrize("backend,library,package", [("osmesa", "OSMesa", "libosmesa6"), ("egl", "EGL", "libegl1")])
def test_missing_gl_library_is_one_line(tmp_path, backend, library, package):
    env = {"MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend, "PATH": "/usr/bin:/bin"}
    out = tmp_path / "x.mp4"
    p = subprocess.run([sys.executable, "-c", HIDE_AND_RUN, library, str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("play.py: error: --video:") and f"lib{library}" in lines[0] and package in lines[0]
    assert p.stdout == "" and not out.exists()
