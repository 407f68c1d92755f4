"""MP4 of one env, rendered headless with MuJoCo's renderer (play.py --video)."""
from __future__ import annotations

import os
from pathlib import Path

from mjx_env.errors import UserError, first_line


def choose_gl():
    """Headless OpenGL for MuJoCo's renderer: EGL where a GPU render node exists, else OSMesa."""
    if "MUJOCO_GL" not in os.environ:
        has_gpu = any(Path("/dev/dri").glob("renderD*")) if Path("/dev/dri").exists() else False
        os.environ["MUJOCO_GL"] = "egl" if has_gpu else "osmesa"
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


# What each headless backend needs, as PyOpenGL loads it (lib<name>.so or lib<name>.so.N), and the
# Debian/Ubuntu package that provides it.
GL_LIBRARIES = {"osmesa": [("OSMesa", "libosmesa6")], "egl": [("EGL", "libegl1"), (("OpenGL", "GL"), "libgl1")]}


def loadable(name: str) -> bool:
    import ctypes
    for filename in [f"lib{name}.so"] + [f"lib{name}.so.{i}" for i in range(9, -1, -1)]:
        try:
            ctypes.cdll.LoadLibrary(filename)
            return True
        except OSError:
            continue
    return False


def check_gl():
    """Fail in one line when MUJOCO_GL's library is missing: importing mujoco would otherwise die
    inside PyOpenGL with a long traceback (AttributeError: 'NoneType' ... 'glGetError')."""
    backend = os.environ.get("MUJOCO_GL", "").lower()
    for names, package in GL_LIBRARIES.get(backend, []):
        names = (names,) if isinstance(names, str) else names
        if not any(loadable(n) for n in names):
            other = "MUJOCO_GL=egl on a machine with a GPU" if backend == "osmesa" else "MUJOCO_GL=osmesa"
            raise UserError(f"--video: MuJoCo's {backend} renderer needs lib{names[0]}, which is not installed: "
                            f"apt-get install {package} (Debian/Ubuntu), or use {other}")


class VideoWriter:
    def __init__(self, env, path, width, height, fps):
        import mujoco
        try:
            import imageio.v2 as imageio
        except ImportError:
            raise UserError("--video needs imageio with ffmpeg: pip install 'imageio[ffmpeg]'") from None
        m = env.model.mj_model
        if m.vis.global_.offwidth < width or m.vis.global_.offheight < height:
            m.vis.global_.offwidth, m.vis.global_.offheight = max(width, m.vis.global_.offwidth), \
                max(height, m.vis.global_.offheight)
        try:
            self.renderer = mujoco.Renderer(m, height, width)
        except Exception as exc:
            raise UserError(f"cannot open a headless OpenGL context ({os.environ.get('MUJOCO_GL')}): "
                            f"{first_line(exc)}; "
                            "on a machine without a GPU: apt-get install libosmesa6 and MUJOCO_GL=osmesa") from None
        self.m, self.d = m, mujoco.MjData(m)
        self.cam = mujoco.MjvCamera()
        self.cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        self.cam.trackbodyid = env.model.base_body
        self.cam.distance, self.cam.elevation, self.cam.azimuth = 1.6, -20.0, 120.0
        self.writer = imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=1)
        self.mujoco = mujoco

    def add(self, qpos):
        self.d.qpos[:] = qpos
        self.mujoco.mj_forward(self.m, self.d)
        self.renderer.update_scene(self.d, camera=self.cam)
        self.writer.append_data(self.renderer.render())

    def close(self):
        self.writer.close()
        self.renderer.close()
