"""bf16 matrix products on CPUs without bf16 instructions, at close to float32 speed.

The study computes in bf16 autocast (``amp="bf16"``). Where the CPU has bf16 instructions
(``avx512_bf16`` or AMX) oneDNN multiplies bf16 matrices natively; elsewhere (AVX2 only,
most laptops and many servers) PyTorch falls back to a scalar loop that is 5-50x slower
than a float32 product of the same size, so a setting takes hours instead of minutes.

Both compute the same thing: the operands are bf16 numbers, each product of two of them is
exact in float32 (8 + 8 significant bits), the sums are accumulated in float32, and the
result is rounded to bf16 once. :class:`EmulatedBf16Gemm` does exactly that with float32
BLAS: it upcasts the bf16 operands of ``linear``, ``mm``, ``addmm``, ``bmm`` and
``baddbmm`` (a lossless copy), multiplies in float32 and rounds the result to bf16. Only
the order in which the float32 sums are accumulated differs, as it does between two CPUs'
native kernels or between a CPU and a GPU; ``results/reruns`` holds a published setting
computed again this way, with the difference.

:func:`kernels` says which path a device takes: ``"native"`` or ``"emulated"``;
``OPTICAL_BF16_KERNELS=native|emulated`` overrides the choice (tests and benchmarks
compare the two). :func:`bf16_region` is the context every bf16 computation of the
project runs in (autocast plus, where needed, the emulation); the backward pass of a
training step must run inside it too, since its products are bf16 as well.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch.utils._python_dispatch import TorchDispatchMode

KERNELS = ("native", "emulated")
#: Environment variable that forces :func:`kernels` (``native`` or ``emulated``).
ENV = "OPTICAL_BF16_KERNELS"

_aten = torch.ops.aten
#: The products emulated: ``linear`` reaches the backend whole in inference mode (encoding);
#: with autograd it arrives as ``mm``/``addmm``, as do the backward pass's products.
_GEMMS = frozenset({_aten.mm.default, _aten.addmm.default, _aten.bmm.default,
                    _aten.baddbmm.default, _aten.linear.default})


def cpu_has_bf16() -> bool:
    """True when oneDNN multiplies bf16 natively on this CPU (``avx512_bf16`` / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def kernels(device: str | torch.device = "cpu") -> str:
    """How bf16 products run on ``device``: ``"native"`` (GPUs, CPUs with bf16
    instructions) or ``"emulated"`` (float32 BLAS on bf16 operands, :class:`EmulatedBf16Gemm`).
    ``OPTICAL_BF16_KERNELS`` overrides it; an unknown value is an error."""
    forced = os.environ.get(ENV, "").strip()
    if forced:
        if forced not in KERNELS:
            raise ValueError(f"{ENV} must be one of {KERNELS}, got {forced!r}")
        return forced
    if torch.device(device).type != "cpu":
        return "native"
    return "native" if cpu_has_bf16() else "emulated"


class EmulatedBf16Gemm(TorchDispatchMode):
    """Runs the bf16 matrix products (``linear``, ``mm``, ``addmm``, ``bmm``, ``baddbmm``) of
    its region as float32 products of the same bf16 operands, rounded to bf16: the arithmetic of a
    native bf16 kernel (exact products, float32 sums, one rounding) at close to float32 speed
    (the casts around each product cost about a fifth of an L6 training step).
    Every other operation, and products in any other dtype, run unchanged."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _GEMMS and any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16
                                  for a in args):
            up = [a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16
                  else a for a in args]
            return func(*up, **kwargs).to(torch.bfloat16)
        return func(*args, **kwargs)


def _active() -> bool:
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return any(isinstance(m, EmulatedBf16Gemm) for m in _get_current_dispatch_mode_stack())


def emulation(device: str | torch.device = "cpu"):
    """The emulation alone (no autocast) where :func:`kernels` says ``"emulated"`` and it
    is not already on; otherwise a no-op. For regions that run bf16 products outside an
    autocast region, such as the backward pass of a bf16 forward."""
    if kernels(device) == "emulated" and not _active():
        return EmulatedBf16Gemm()
    return contextlib.nullcontext()


@contextlib.contextmanager
def bf16_region(device: str | torch.device = "cpu"):
    """bf16 autocast on ``device``'s type, with :func:`emulation` where it is needed."""
    with emulation(device), torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        yield
