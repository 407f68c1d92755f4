"""Quaternion helpers (MuJoCo convention: w, x, y, z; unit quaternions)."""
import jax.numpy as jnp


def rotate_inverse(quat: jnp.ndarray, vec: jnp.ndarray) -> jnp.ndarray:
    """Express a world-frame vector in the body frame: R(quat)^T @ vec."""
    w, u = quat[0], quat[1:4]
    t = 2.0 * jnp.cross(u, vec)
    return vec - w * t + jnp.cross(u, t)


def roll_pitch(quat: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Roll and pitch (rad) of the x-y-z (roll, pitch, yaw) Euler decomposition."""
    w, x, y, z = quat[0], quat[1], quat[2], quat[3]
    roll = jnp.arctan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = jnp.arcsin(jnp.clip(2.0 * (w * y - z * x), -1.0, 1.0))
    return roll, pitch
