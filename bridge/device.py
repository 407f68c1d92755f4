"""The one place where the compute device is chosen, for JAX and torch together.

`resolve(name)` is the single entry point: it picks the torch device, makes it torch's current
CUDA device, picks the JAX device on the same physical GPU, and sets JAX's matmul precision.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import jax
import torch

import mjx_env  # noqa: F401  (JAX's GPU memory policy must be set before JAX picks a device)
from mjx_env.errors import UserError

# "highest": float32 matmuls in full float32, as C MuJoCo computes them (in float64). On recent
# NVIDIA GPUs JAX otherwise runs them in TF32 (10-bit mantissa) and MJX sets no precision of its
# own. On the CPU both settings compute the same bits (XLA:CPU has no TF32).
MATMUL_PRECISIONS = ("highest", "default")
DEFAULT_MATMUL_PRECISION = "highest"


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


# ---- the same physical GPU on both sides -------------------------------------------------------
def _pci(value):
    """(domain, bus, device) from a PCI bus id string 'dddd:bb:dd.f' (hex), or None."""
    try:
        domain, bus, dev = str(value).strip().split(":")
        return int(domain, 16), int(bus, 16), int(dev.split(".")[0], 16)
    except ValueError:
        return None


def _uuid(value):
    if value is None:
        return None
    text = str(value).strip().lower()
    text = text[4:] if text.startswith("gpu-") else text
    return text.replace("-", "") or None


def torch_gpu_ids(index: int) -> dict:
    """Hardware ids of torch's cuda:index: PCI location and UUID where this torch exposes them,
    and the CUDA ordinal (the same for every library in one process)."""
    p = torch.cuda.get_device_properties(index)
    ids = {"ordinal": index}
    if all(hasattr(p, a) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id")):
        ids["pci"] = (int(p.pci_domain_id), int(p.pci_bus_id), int(p.pci_device_id))
    ids["uuid"] = _uuid(getattr(p, "uuid", None))
    return ids


def jax_gpu_ids(dev) -> dict:
    """The same ids of a JAX GPU, from the attributes its PJRT plugin reports (where it does)."""
    return {"ordinal": dev.local_hardware_id,
            "pci": _pci(getattr(dev, "pci_bus_id", None)),
            "uuid": _uuid(getattr(dev, "uuid", None) or getattr(dev, "device_uuid", None))}


def matching_jax_gpu(index: int, gpus):
    """The JAX GPU that is torch's cuda:index. Compared on the most specific id that torch and
    every JAX GPU expose: PCI location, then UUID, then CUDA ordinal. Never on list position:
    JAX's device list need not be in CUDA order (jax_cuda_visible_devices, several processes)."""
    want = torch_gpu_ids(index)
    have = [(g, jax_gpu_ids(g)) for g in gpus]
    for key in ("pci", "uuid", "ordinal"):
        if want.get(key) is None or any(ids[key] is None for _, ids in have):
            continue
        hits = [g for g, ids in have if ids[key] == want[key]]
        if hits:
            return hits[0]
        raise UserError(f"torch's cuda:{index} ({key} {want[key]}) is not among the GPUs JAX sees "
                        f"({', '.join(str(ids[key]) for _, ids in have)}): give torch and JAX the same "
                        "CUDA_VISIBLE_DEVICES")
    raise UserError(f"cannot tell which JAX GPU is torch's cuda:{index}")  # unreachable: ordinal is always known


def set_matmul_precision(precision: str) -> None:
    if precision not in MATMUL_PRECISIONS:
        raise UserError(f"unknown matmul precision {precision!r}: choose {' or '.join(MATMUL_PRECISIONS)}")
    jax.config.update("jax_default_matmul_precision", None if precision == "default" else precision)


def resolve(name: str | None, matmul_precision: str = DEFAULT_MATMUL_PRECISION) -> Devices:
    """'cpu', 'cuda' or 'cuda:N' (None: the default). JAX arrays are placed on the same device.
    Under torchrun, 'cuda' and the default mean cuda:LOCAL_RANK."""
    set_matmul_precision(matmul_precision)
    if name in (None, "auto"):
        name = default_device()
        if name == "cpu" and torch.cuda.is_available():
            print("[device] torch sees a CUDA GPU but JAX does not (no JAX CUDA plugin installed): "
                  "running on the CPU; to use the GPU: pip install -e '.[cuda]'", file=sys.stderr, flush=True)
    if name == "cpu":
        dev = jax.devices("cpu")[0]
        jax.config.update("jax_default_device", dev)
        return Devices(torch.device("cpu"), dev, "cpu")
    if name == "cuda" or name.startswith("cuda:"):
        local = torchrun_local_rank()
        index = str(local or 0) if name == "cuda" else name.split(":", 1)[1]
        if not index.isdigit():
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
        count = torch.cuda.device_count()
        if index >= count:
            raise UserError(f"device {name} does not exist: {count} GPU(s) visible; "
                            f"use --device cuda:0..{count - 1} or --device cpu")
        # torch exports a tensor through DLPack only from its current device (BufferError otherwise).
        torch.cuda.set_device(index)
        dev = matching_jax_gpu(index, gpus)
        jax.config.update("jax_default_device", dev)
        return Devices(torch.device(f"cuda:{index}"), dev, f"cuda:{index}")
    raise UserError(f"bad device {name!r}: use cpu, cuda or cuda:N")


def synchronize(devices: Devices) -> None:
    """Wait for queued GPU work (for honest timings); nothing to do on CPU."""
    if devices.is_gpu:
        torch.cuda.synchronize(devices.torch)
