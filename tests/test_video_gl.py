"""play.py --video: a rendered frame shows the robot where OSMesa is installed; on a machine without the
headless OpenGL library, one line and exit code 2."""
import os
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


def osmesa_missing() -> str | None:
    from tools.video import loadable
    return None if loadable("OSMesa") else "no OSMesa for headless rendering (Debian: apt-get install libosmesa6)"


def test_video_shows_the_robot_on_the_floor(tmp_path):
    """play.py --video through OSMesa (as on a machine without a GPU): 0.4 s at 50 frames/s, each frame
    a rendered scene, the tracked robot the dark object in the middle of the light floor."""
    missing = osmesa_missing()
    if missing:
        pytest.skip(missing)
    import imageio.v2 as imageio
    import numpy as np
    out = tmp_path / "go2.mp4"
    env = {**os.environ, "MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    p = subprocess.run([sys.executable, "play.py", "-B", "1", "--duration", "0.4", "--no-progress", "--video", str(out),
                        "--width", "160", "--height-px", "120"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0 and f"wrote {out}" in p.stdout, p.stderr[-3000:]
    frames = np.asarray([f for f in imageio.get_reader(out)], float)      # (its len() is inf: no list())
    assert frames.shape == (20, 120, 160, 3)
    for f in frames:
        assert f.std() > 20                                   # not blank: floor, sky and robot
        dark = f.max(axis=2) < 80
        middle = dark[30:90, 40:120].mean()
        # measured: 21 % of the middle dark (the robot), 6 % of the whole frame
        assert middle > 0.08 and middle > 2 * dark.mean(), (middle, dark.mean())
    assert np.abs(frames[0] - frames[-1]).mean() > 0.5       # the robot walks: the frames change
