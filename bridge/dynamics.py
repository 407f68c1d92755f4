"""Φ for torch: Go2Dynamics.rollout as a differentiable torch function.

    dyn = TorchDynamics(Go2Dynamics())
    X = dyn.phi(x0, U)              # DynaFlow's form: U[:, k] applied during step k (Go2Dynamics.phi)
    X = dyn(x0, u_prev, U)          # the env's form (Go2Dynamics.rollout); torch tensors in and out
    loss(X).backward()              # gradients reach x0, (u_prev) and U through the JAX VJP

Arrays cross between torch and JAX through DLPack (no copy when both sit on the same device). The
forward pass is Go2Dynamics.rollout, the env's physics exactly; backward runs the JAX VJP of the
same rollout (which recomputes the forward pass, one control step at a time). Each of the two is
compiled once per (B, H).
"""
from __future__ import annotations

import jax
import torch

from bridge.vec_env import to_jax, to_torch
from mjx_env.dynamics import Go2Dynamics
from mjx_env.errors import UserError


class TorchDynamics:
    def __init__(self, dyn: Go2Dynamics):
        self.dyn = dyn

    def __call__(self, x0: torch.Tensor, u_prev: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        for name, t in (("x0", x0), ("u_prev", u_prev), ("U", U)):
            if not isinstance(t, torch.Tensor):
                raise UserError(f"TorchDynamics: {name} must be a torch tensor, got {type(t).__name__}")
        return _Rollout.apply(self.dyn, x0, u_prev, U)

    def phi(self, x0: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        """Go2Dynamics.phi in torch: X (B, H+1, nx) from x0 (B, nx) and the applied actions U (B, H, 12).
        The same program as rollout at (B, H) (Go2Dynamics.phi_as_rollout, in torch)."""
        for name, t in (("x0", x0), ("U", U)):
            if not isinstance(t, torch.Tensor):
                raise UserError(f"TorchDynamics.phi: {name} must be a torch tensor, got {type(t).__name__}")
        nu = self.dyn.nu
        if x0.dim() != 2 or U.dim() != 3 or U.shape[0] != x0.shape[0] or U.shape[1] < 1 or U.shape[2] != nu:
            raise UserError(f"TorchDynamics.phi: x0 (B, {self.dyn.nx}) and U (B, H >= 1, {nu}) expected, "
                            f"got {tuple(x0.shape)} and {tuple(U.shape)}")
        if not self.dyn.cfg.env.simulate_action_latency:
            return self(x0, torch.zeros_like(U[:, 0]), U)
        return self(x0, U[:, 0], torch.cat([U[:, 1:], U[:, -1:]], dim=1))


def _to_jax(t: torch.Tensor, dyn: Go2Dynamics) -> jax.Array:
    if t.dtype not in (torch.float32, torch.float64):     # DLPack would pass it on; name it here
        raise UserError(f"TorchDynamics: inputs must be float32 or float64 tensors, got {t.dtype}")
    return to_jax(t)


class _Rollout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dyn, x0, u_prev, U):
        args = [_to_jax(t, dyn) for t in (x0, u_prev, U)]
        X = dyn.rollout(*args)
        ctx.dyn, ctx.args = dyn, args
        ctx.dtypes = [t.dtype for t in (x0, u_prev, U)]
        return to_torch(X).to(x0.device)

    @staticmethod
    def backward(ctx, X_bar):
        _, pullback = ctx.dyn.rollout_vjp(*ctx.args)
        grads = pullback(to_jax(X_bar))
        return (None, *(to_torch(g).to(X_bar.device, dtype) for g, dtype in zip(grads, ctx.dtypes)))
