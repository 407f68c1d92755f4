"""The one place where the compute device is chosen, for JAX and torch together."""
from __future__ import annotations

import os
from dataclasses import dataclass

import jax
import torch

import mjx_env  # noqa: F401  (JAX's GPU memory policy must be set before JAX picks a device)
from mjx_env.errors import UserError


@dataclass(frozen=True)
class Devices:
    torch: torch.device        # where the policy trains
    jax: jax.Device            # where the environment state lives
    name: str                  # "cpu" or "cuda:N"

    @property
    def is_gpu(self) -> bool:
        return self.torch.type == "cuda"


def _jax_gpus():
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


def gpu_available() -> bool:
    return torch.cuda.is_available() and bool(_jax_gpus())


def torchrun_local_rank() -> int | None:
    """LOCAL_RANK when torchrun runs several processes: local rank k takes cuda:k (None alone)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ.get("LOCAL_RANK", "0"))
    return None


def default_device() -> str:
    return f"cuda:{torchrun_local_rank() or 0}" if gpu_available() else "cpu"


def resolve(name: str | None) -> Devices:
    """'cpu', 'cuda' or 'cuda:N' (None: the default). JAX arrays are placed on the same device.
    Under torchrun, 'cuda' and the default mean cuda:LOCAL_RANK."""
    name = default_device() if name in (None, "auto") else name
    if name == "cpu":
        dev = jax.devices("cpu")[0]
        jax.config.update("jax_default_device", dev)
        return Devices(torch.device("cpu"), dev, "cpu")
    if name == "cuda" or name.startswith("cuda:"):
        local = torchrun_local_rank()
        index = (local or 0) if name == "cuda" else name.split(":", 1)[1]
        if not str(index).isdigit():
            raise UserError(f"bad device {name!r}: use cpu, cuda or cuda:N")
        index = int(index)
        if local is not None and index != local:
            raise UserError(f"device {name} asked for, but under torchrun local rank {local} uses cuda:{local}: "
                            "pass --device cuda (or leave --device out)")
        if not torch.cuda.is_available():
            raise UserError(f"device {name} asked for, but torch sees no CUDA GPU "
                            "(this torch build or machine has none): use --device cpu")
        gpus = _jax_gpus()
        if not gpus:
            raise UserError(f"device {name} asked for, but JAX sees no GPU: "
                            "pip install -e '.[cuda]' (jax[cuda12]) or use --device cpu")
        if index >= min(len(gpus), torch.cuda.device_count()):
            raise UserError(f"device {name} does not exist: {len(gpus)} GPU(s) visible")
        jax.config.update("jax_default_device", gpus[index])
        return Devices(torch.device(f"cuda:{index}"), gpus[index], f"cuda:{index}")
    raise UserError(f"bad device {name!r}: use cpu, cuda or cuda:N")


def synchronize(devices: Devices) -> None:
    """Wait for queued GPU work (for honest timings); nothing to do on CPU."""
    if devices.is_gpu:
        torch.cuda.synchronize(devices.torch)
