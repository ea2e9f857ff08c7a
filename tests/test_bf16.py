"""bf16 products emulated with float32 BLAS (optical_lib.bf16) compute what a bf16 kernel
computes: exact products of bf16 operands, float32 sums, one rounding to bf16."""

import pytest
import torch

from optical_lib import bf16
from optical_lib.bf16 import EmulatedBf16Gemm, bf16_region, emulation, kernels


def operands(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g).bfloat16() for s in shapes]


def test_every_product_is_the_rounded_float32_product_of_its_bf16_operands():
    a, w, b = operands((64, 96), (80, 96), (80,))
    a.requires_grad_(True)  # with autograd, linear arrives as addmm
    x, y, z = operands((3, 20, 32), (3, 32, 24), (3, 20, 24), seed=1)
    cases = {
        "mm": (lambda: a @ w.T, lambda: a.float() @ w.float().T),
        "addmm": (lambda: torch.nn.functional.linear(a, w, b),
                  lambda: torch.nn.functional.linear(a.float(), w.float(), b.float())),
        "bmm": (lambda: torch.bmm(x, y), lambda: torch.bmm(x.float(), y.float())),
        "baddbmm": (lambda: torch.baddbmm(z, x, y),
                    lambda: torch.baddbmm(z.float(), x.float(), y.float())),
    }
    for name, (bf16_op, float_op) in cases.items():
        with EmulatedBf16Gemm():
            got = bf16_op()
            with torch.no_grad():  # encoding: linear reaches the backend whole
                assert torch.equal(bf16_op(), got), name
        assert got.dtype == torch.bfloat16, name
        assert torch.equal(got, float_op().detach().bfloat16()), name


def test_emulated_products_agree_with_the_native_bf16_kernel_up_to_summation_order():
    a, w = operands((128, 384), (256, 384))
    native = a @ w.T  # PyTorch's own bf16 kernel (oneDNN, or its slow fallback)
    with EmulatedBf16Gemm():
        emulated = a @ w.T
    differ = native != emulated
    assert differ.float().mean() < 0.01  # almost every entry is the same bf16 number ...
    ulp = native.float().abs().clamp_min(1e-30) * 2.0 ** -7
    assert ((native.float() - emulated.float()).abs()[differ] <= ulp[differ] * 1.01).all()
    # ... the others one unit in the last place apart (the sums' order differs)


class Counting(EmulatedBf16Gemm):
    """The emulation, noting each bf16 product it takes over."""

    def __init__(self):
        super().__init__()
        self.taken = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in bf16._GEMMS and any(getattr(t, "dtype", None) == torch.bfloat16
                                       for t in args):
            self.taken.append(str(func))
        return super().__torch_dispatch__(func, types, args, kwargs)


def test_encoding_under_inference_mode_is_emulated_too():
    layer = torch.nn.Linear(16, 4)
    x = torch.randn(2, 8, 16)  # (batch, tokens, width), as an encoder's
    with torch.inference_mode(), Counting() as mode, torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert mode.taken == ["aten.linear.default"] and out.dtype == torch.bfloat16
    assert torch.equal(out, torch.nn.functional.linear(
        x.bfloat16().float(), layer.weight.bfloat16().float(),
        layer.bias.bfloat16().float()).bfloat16())


def test_float32_work_and_other_ops_are_untouched():
    a = torch.randn(32, 48)
    w = torch.randn(16, 48)
    with EmulatedBf16Gemm():
        inside = (a @ w.T, torch.nn.functional.gelu(a.bfloat16()))
    assert torch.equal(inside[0], a @ w.T)
    assert torch.equal(inside[1], torch.nn.functional.gelu(a.bfloat16()))


def test_the_backward_pass_of_a_bf16_forward_is_emulated_too(monkeypatch):
    monkeypatch.setenv(bf16.ENV, "emulated")
    modes = []
    monkeypatch.setattr(bf16, "EmulatedBf16Gemm", lambda: modes.append(Counting()) or modes[-1])
    layer = torch.nn.Linear(24, 8)
    with bf16_region("cpu"):
        loss = layer(torch.randn(5, 24)).float().pow(2).sum()
    with emulation("cpu"):
        loss.backward()
    forward, backward = (m.taken for m in modes)
    assert forward == ["aten.addmm.default"]
    assert "aten.mm.default" in backward  # the weight's gradient is a bf16 product
    assert layer.weight.grad.dtype == torch.float32


def test_the_kernels_choice_follows_the_cpu_and_can_be_forced(monkeypatch):
    monkeypatch.delenv(bf16.ENV, raising=False)
    assert kernels("cpu") == ("native" if bf16.cpu_has_bf16() else "emulated")
    monkeypatch.setenv(bf16.ENV, "native")
    assert kernels("cpu") == "native"
    assert isinstance(emulation("cpu"), type(bf16.contextlib.nullcontext()))
    monkeypatch.setenv(bf16.ENV, "fast")
    with pytest.raises(ValueError, match="OPTICAL_BF16_KERNELS must be one of"):
        kernels("cpu")


def test_a_nested_region_does_not_stack_a_second_emulation(monkeypatch):
    monkeypatch.setenv(bf16.ENV, "emulated")
    with bf16_region("cpu"):
        assert not isinstance(emulation("cpu"), EmulatedBf16Gemm)
    assert isinstance(emulation("cpu"), EmulatedBf16Gemm)
