"""Device choice (bridge/device.py) with the CUDA queries faked: the index asked for, torch's current
device set, the JAX GPU matched on its hardware id, the matmul precision, the CPU fallback message."""
from types import SimpleNamespace

import jax
import pytest
import torch

from bridge import device as devmod
from mjx_env.errors import UserError


class FakeJaxGpu:
    """What a JAX CUDA device reports; attributes its plugin lacks are simply absent."""
    platform = "gpu"

    def __init__(self, ordinal, pci=None, uuid=None):
        self.local_hardware_id = ordinal
        if pci is not None:
            self.pci_bus_id = pci
        if uuid is not None:
            self.uuid = uuid

    def __repr__(self):
        return f"FakeJaxGpu({self.local_hardware_id})"


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch sees the GPUs given by .props; JAX sees .jax_gpus; records set_device and jax.config."""
    calls = SimpleNamespace(set_device=[], config={}, props=[], jax_gpus=[])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(calls.props))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(calls.props))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: calls.props[i])
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.set_device.append(i))
    monkeypatch.setattr(devmod, "_jax_gpus", lambda: list(calls.jax_gpus))
    monkeypatch.setattr(jax.config, "update", lambda k, v: calls.config.__setitem__(k, v))
    return calls


def torch_props(bus=None, uuid=None):
    p = SimpleNamespace(name="fake")
    if bus is not None:
        p.pci_domain_id, p.pci_bus_id, p.pci_device_id = 0, bus, 0
    if uuid is not None:
        p.uuid = uuid
    return p


def test_index_sets_torch_current_device_and_matches_pci_location(fake_cuda):
    # torch orders the GPUs one way, JAX's list another: list position would pick the wrong one.
    fake_cuda.props = [torch_props(bus=0x3B), torch_props(bus=0x5E)]
    fake_cuda.jax_gpus = [FakeJaxGpu(1, pci="0000:5e:00.0"), FakeJaxGpu(0, pci="0000:3B:00.0")]
    d = devmod.resolve("cuda:1")
    assert d.name == "cuda:1" and d.torch == torch.device("cuda:1") and d.is_gpu
    assert d.jax is fake_cuda.jax_gpus[0]                        # bus 0x5e, first in JAX's list
    assert fake_cuda.set_device == [1]
    assert fake_cuda.config["jax_default_device"] is d.jax
    d = devmod.resolve("cuda")
    assert d.name == "cuda:0" and d.jax is fake_cuda.jax_gpus[1] and fake_cuda.set_device == [1, 0]


def test_uuid_match_when_torch_has_no_pci_location(fake_cuda):
    fake_cuda.props = [torch_props(uuid="aa-01"), torch_props(uuid="bb-02")]
    fake_cuda.jax_gpus = [FakeJaxGpu(0, uuid="GPU-BB-02"), FakeJaxGpu(1, uuid="GPU-aa-01")]
    assert devmod.resolve("cuda:1").jax is fake_cuda.jax_gpus[0]
    assert devmod.resolve("cuda:0").jax is fake_cuda.jax_gpus[1]


def test_cuda_ordinal_when_no_richer_id_is_reported(fake_cuda):
    # JAX reports no PCI/UUID attribute: the CUDA ordinal (local_hardware_id), not the list index.
    fake_cuda.props = [torch_props(bus=1), torch_props(bus=2)]
    fake_cuda.jax_gpus = [FakeJaxGpu(1), FakeJaxGpu(0)]
    assert devmod.resolve("cuda:0").jax is fake_cuda.jax_gpus[1]


def test_gpu_that_jax_does_not_see_is_one_clear_error(fake_cuda):
    fake_cuda.props = [torch_props(bus=0x3B), torch_props(bus=0x5E)]
    fake_cuda.jax_gpus = [FakeJaxGpu(0, pci="0000:3b:00.0")]       # JAX limited to one GPU
    with pytest.raises(UserError, match="not among the GPUs JAX sees.*CUDA_VISIBLE_DEVICES"):
        devmod.resolve("cuda:1")


@pytest.mark.parametrize("name,gpus,message", [
    ("cuda:2", 2, "device cuda:2 does not exist: 2 GPU"),
    ("cuda:x", 2, "bad device 'cuda:x'"),
    ("tpu", 2, "bad device 'tpu'"),
    ("cuda", 0, "torch sees no CUDA GPU"),
])
def test_bad_device_names(fake_cuda, name, gpus, message):
    fake_cuda.props = [torch_props(bus=i) for i in range(gpus)]
    fake_cuda.jax_gpus = [FakeJaxGpu(i) for i in range(gpus)]
    with pytest.raises(UserError, match=message):
        devmod.resolve(name)
    assert fake_cuda.set_device == []


def test_torch_gpu_without_jax_plugin(fake_cuda, capsys):
    fake_cuda.props = [torch_props(bus=1)]
    with pytest.raises(UserError, match=r"JAX sees no GPU: pip install -e '\.\[cuda\]'"):
        devmod.resolve("cuda:0")
    d = devmod.resolve(None)                      # the default falls back to the CPU, and says why
    assert d.name == "cpu"
    err = capsys.readouterr().err
    assert "torch sees a CUDA GPU but JAX does not" in err and "pip install -e '.[cuda]'" in err
    fake_cuda.props = []
    devmod.resolve(None)                          # a CPU-only machine: nothing to say
    assert capsys.readouterr().err == ""


def test_matmul_precision_is_set_where_the_device_is_chosen(fake_cuda):
    devmod.resolve("cpu")
    assert fake_cuda.config["jax_default_matmul_precision"] == "highest"      # the default
    devmod.resolve("cpu", "default")
    assert fake_cuda.config["jax_default_matmul_precision"] is None           # JAX's own default
    with pytest.raises(UserError, match="unknown matmul precision 'tf32'"):
        devmod.resolve("cpu", "tf32")


def test_matmul_precision_reaches_jax():
    before = jax.config.jax_default_matmul_precision
    try:
        devmod.resolve("cpu", "highest")
        assert jax.config.jax_default_matmul_precision == "highest"
        devmod.resolve("cpu", "default")
        assert jax.config.jax_default_matmul_precision is None
    finally:
        jax.config.update("jax_default_matmul_precision", before)
