"""Tests of optical_lib.ot: batched log-domain Sinkhorn and the OPTICAL loss.

The reference is POT (``ot.bregman.sinkhorn_log`` one problem at a time in float64 on numpy
inputs, and ``ot.solve_batch`` where it applies); the batched result must also equal the
per-problem result (POT's own pattern in test/batch/test_solve_batch.py).
"""

from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from optical_lib.ot import (
    SinkhornResult,
    cosine_cost,
    ot_alignment_loss,
    sinkhorn,
    transport_loss,
)

# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def padded_problem(seed, B=6, n=9, m=11, dtype=torch.float64, nan_pad=True):
    """Random costs in [0, 2] with random lengths and random left/right padding per problem.

    Padding entries of C are NaN (they must be ignored). Returns C, mask_a, mask_b.
    """
    rng = np.random.default_rng(seed)
    C = torch.as_tensor(rng.uniform(0, 2, size=(B, n, m)), dtype=dtype)
    ma = torch.zeros(B, n, dtype=torch.bool)
    mb = torch.zeros(B, m, dtype=torch.bool)
    for k in range(B):
        la, lb = int(rng.integers(1, n + 1)), int(rng.integers(1, m + 1))
        if k == 0:  # always one problem with full length on both sides
            la, lb = n, m
        if rng.random() < 0.5:
            ma[k, :la] = True
        else:
            ma[k, n - la :] = True
        if rng.random() < 0.5:
            mb[k, :lb] = True
        else:
            mb[k, m - lb :] = True
    if nan_pad:
        C[~(ma[:, :, None] & mb[:, None, :])] = float("nan")
    return C, ma, mb


def real_block(X, ma_k, mb_k):
    """Slice one problem's (n, m) matrix to its real rows and columns."""
    return X[ma_k][:, mb_k]


def pot_plan(C_k, a_k, b_k, eps):
    """POT's log-domain Sinkhorn, float64 numpy, run to convergence."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ot.bregman.sinkhorn_log(
            a_k, b_k, C_k, eps, numItermax=100_000, stopThr=1e-14, warn=False
        )


def assert_matches_pot(P, C, ma, mb, eps, atol=1e-6):
    """Every problem's real block of the plan ``P`` equals POT's plan for uniform marginals."""
    for k in range(C.shape[0]):
        Ck = real_block(C[k], ma[k], mb[k]).numpy()
        a_k = np.full(Ck.shape[0], 1.0 / Ck.shape[0])
        b_k = np.full(Ck.shape[1], 1.0 / Ck.shape[1])
        P_pot = pot_plan(Ck, a_k, b_k, eps)
        assert np.abs(real_block(P[k], ma[k], mb[k]).numpy() - P_pot).max() <= atol, k


def marginals_err(P, ma, mb, a=None, b=None):
    """Max abs error of both marginals against (renormalised) a, b over real tokens."""
    fa = ma.to(P.dtype) if a is None else torch.where(ma, a.to(P.dtype), 0.0)
    fb = mb.to(P.dtype) if b is None else torch.where(mb, b.to(P.dtype), 0.0)
    fa = fa / fa.sum(1, keepdim=True)
    fb = fb / fb.sum(1, keepdim=True)
    return max((P.sum(2) - fa).abs().max().item(), (P.sum(1) - fb).abs().max().item())


def pad_mask2d(ma, mb):
    return ~(ma[:, :, None] & mb[:, None, :])


# ----------------------------------------------------------------------------------------------
# Agreement with POT
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.05, 0.1])
@pytest.mark.parametrize("autograd_path", [False, True])
def test_matches_pot_sinkhorn_log_with_padding(eps, autograd_path):
    C, ma, mb = padded_problem(seed=1)
    Cin = C.clone().requires_grad_(autograd_path)
    res = sinkhorn(Cin, eps=eps, n_iters=20_000, tol=1e-12, mask_a=ma, mask_b=mb)
    assert isinstance(res, SinkhornResult)
    assert res.n_iters < 20_000, "did not converge"
    P = res.plan.detach()
    assert P.shape == C.shape and P.dtype == torch.float64
    assert_matches_pot(P, C, ma, mb, eps)
    assert marginals_err(P, ma, mb) <= 1e-6
    pad = pad_mask2d(ma, mb)
    assert pad.any()
    assert torch.all(P[pad] == 0)  # exactly zero, not just small


def test_matches_pot_with_weights():
    C, ma, mb = padded_problem(seed=2)
    rng = np.random.default_rng(3)
    a = torch.as_tensor(rng.uniform(0.1, 1, size=ma.shape))
    b = torch.as_tensor(rng.uniform(0.1, 1, size=mb.shape))
    res = sinkhorn(C, a, b, eps=0.05, n_iters=20_000, tol=1e-12, mask_a=ma, mask_b=mb)
    for k in range(C.shape[0]):
        Ck = real_block(C[k], ma[k], mb[k]).numpy()
        a_k = a[k][ma[k]].numpy()
        b_k = b[k][mb[k]].numpy()
        P_pot = pot_plan(Ck, a_k / a_k.sum(), b_k / b_k.sum(), 0.05)
        assert np.abs(real_block(res.plan[k], ma[k], mb[k]).numpy() - P_pot).max() <= 1e-6
    assert marginals_err(res.plan, ma, mb, a, b) <= 1e-6


def test_matches_pot_solve_batch_no_padding():
    rng = np.random.default_rng(4)
    C = torch.as_tensor(rng.uniform(0, 2, size=(5, 8, 10)))
    eps = 0.05
    ours = sinkhorn(C, eps=eps, n_iters=20_000, tol=1e-12).plan
    ref = ot.solve_batch(
        C, eps, max_iter=20_000, tol=1e-13, method="log_sinkhorn", grad="detach"
    ).plan
    assert torch.max(torch.abs(ours - ref)).item() <= 1e-6


def test_fixed_iterations_match_pot_solve_batch_exactly():
    # Same update order (row then column) and same init: after 7 iterations the plans agree to
    # rounding, whether or not they have converged.
    rng = np.random.default_rng(5)
    C = torch.as_tensor(rng.uniform(0, 2, size=(4, 6, 7)))
    ours = sinkhorn(C, eps=0.05, n_iters=7).plan
    ref = ot.solve_batch(C, 0.05, max_iter=7, tol=0.0, method="log_sinkhorn", grad="detach").plan
    assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Batched == per problem
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("autograd_path", [False, True])
def test_batched_equals_per_problem(autograd_path):
    C, ma, mb = padded_problem(seed=6)
    # Few iterations: far from convergence, so any leak of padding into the updates would show.
    Cin = C.clone().requires_grad_(autograd_path)
    batched = sinkhorn(Cin, eps=0.05, n_iters=15, mask_a=ma, mask_b=mb)
    for k in range(C.shape[0]):
        Ck = real_block(C[k], ma[k], mb[k]).unsqueeze(0).clone().requires_grad_(autograd_path)
        single = sinkhorn(Ck, eps=0.05, n_iters=15).plan[0].detach()
        got = real_block(batched.plan[k].detach(), ma[k], mb[k])
        assert torch.allclose(got, single, rtol=1e-10, atol=1e-14)
        f_single = sinkhorn(Ck.detach(), eps=0.05, n_iters=15).f[0]
        assert torch.allclose(batched.f[k][ma[k]].detach(), f_single, rtol=1e-10, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 7),
    m=st.integers(1, 7),
    B=st.integers(1, 4),
    eps=st.sampled_from([0.01, 0.05, 0.5]),
)
def test_batched_equals_per_problem_property(seed, n, m, B, eps):
    C, ma, mb = padded_problem(seed, B=B, n=n, m=m)
    P = sinkhorn(C, eps=eps, n_iters=10, mask_a=ma, mask_b=mb).plan
    assert torch.isfinite(P).all()
    assert torch.all(P[pad_mask2d(ma, mb)] == 0)
    for k in range(B):
        single = sinkhorn(real_block(C[k], ma[k], mb[k])[None], eps=eps, n_iters=10).plan[0]
        assert torch.allclose(real_block(P[k], ma[k], mb[k]), single, rtol=1e-9, atol=1e-15)


def test_fast_and_autograd_paths_agree_in_float32():
    C, ma, mb = padded_problem(seed=7, dtype=torch.float32)
    fast = sinkhorn(C, eps=0.02, n_iters=200, mask_a=ma, mask_b=mb).plan
    slow = sinkhorn(C.clone().requires_grad_(), eps=0.02, n_iters=200, mask_a=ma, mask_b=mb)
    assert fast.dtype == torch.float32
    assert torch.allclose(fast, slow.plan.detach(), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("grad", ["unrolled", "detached"])
def test_nan_padding_stays_out_of_the_gradient(grad):
    """Padding entries of C may be NaN; the loss and its gradient ignore them (found on the
    GPU run of ``test_cuda_matches_cpu``: NaN * 0 in the product's backward poisoned every
    entry's unrolled gradient, on CPU too)."""
    C, ma, mb = padded_problem(seed=18)
    Cg = C.clone().requires_grad_(True)
    transport_loss(Cg, ma, mb, grad=grad).backward()
    assert torch.isfinite(Cg.grad).all()
    real = ma[:, :, None] & mb[:, None, :]
    assert (Cg.grad[~real] == 0).all()
    clean = torch.where(real, C, 0.5).requires_grad_(True)
    transport_loss(clean, ma, mb, grad=grad).backward()
    assert torch.allclose(Cg.grad, clean.grad, atol=1e-12)


def test_public_log_softmax_fallback_gives_the_same_plan(monkeypatch):
    """The fast path reads a private torch kernel; the public fallback used when a torch
    build lacks it must give the same transport plan (and POT's, on the same problem)."""
    import optical_lib.ot as ot_module

    assert ot_module._log_softmax_into is ot_module._log_softmax_private  # this torch has it
    C, ma, mb = padded_problem(seed=11)
    fast = sinkhorn(C, eps=0.05, n_iters=300, mask_a=ma, mask_b=mb)
    monkeypatch.setattr(ot_module, "_log_softmax_into", ot_module._log_softmax_public)
    public = sinkhorn(C, eps=0.05, n_iters=300, mask_a=ma, mask_b=mb)
    assert torch.allclose(fast.plan, public.plan, rtol=0, atol=1e-12)
    assert_matches_pot(public.plan, C, ma, mb, 0.05)
    # a torch build whose private kernel is missing falls back at import
    monkeypatch.delattr(torch, "_log_softmax")
    assert ot_module._pick_log_softmax() is ot_module._log_softmax_public


# ----------------------------------------------------------------------------------------------
# Convergence control, stability
# ----------------------------------------------------------------------------------------------


def test_tol_early_stop_and_fixed_iterations():
    C, ma, mb = padded_problem(seed=8)
    fixed = sinkhorn(C, eps=0.1, n_iters=37, mask_a=ma, mask_b=mb)
    assert fixed.n_iters == 37
    early = sinkhorn(C, eps=0.1, n_iters=5000, tol=1e-9, mask_a=ma, mask_b=mb, check_every=5)
    assert early.n_iters < 5000 and early.n_iters % 5 == 0
    rows = early.plan.sum(2)
    target = ma.double() / ma.sum(1, keepdim=True)
    assert (rows - target).abs().sum(1).max().item() < 1e-9
    # Column marginals are exact after every iteration (the column update comes last).
    cols = fixed.plan.sum(1)
    assert torch.allclose(cols, mb.double() / mb.sum(1, keepdim=True), atol=1e-12)


def token_problem(seed, B=4, n=8, m=10, d=16, dtype=torch.float64):
    """Cosine costs of random token vectors spanning [0, 2] (one identical, one opposite pair)."""
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(B, n, d, generator=g, dtype=torch.float64)
    T = torch.randn(B, m, d, generator=g, dtype=torch.float64)
    T[:, 0], T[:, 1] = S[:, 0], -S[:, 1]
    _, ma, mb = padded_problem(seed, B=B, n=n, m=m)
    ma[:, :2] = True
    mb[:, :2] = True
    return cosine_cost(S, T).to(dtype), ma, mb


@pytest.mark.parametrize(
    "dtype,tol,atol", [(torch.float64, 1e-8, 1e-6), (torch.float32, 1e-5, 1e-4)]
)
@pytest.mark.parametrize("autograd_path", [False, True])
def test_stable_at_small_eps(dtype, tol, atol, autograd_path):
    C, ma, mb = token_problem(seed=2, dtype=dtype)
    assert C.min() < 1e-6 and C.max() > 2 - 1e-6  # costs in [0, 2]: K = -C/eps down to -400
    eps = 0.005
    Cin = C.clone().requires_grad_(autograd_path)
    res = sinkhorn(Cin, eps=eps, n_iters=5000, tol=tol, mask_a=ma, mask_b=mb)
    P = res.plan.detach()
    assert torch.isfinite(P).all() and torch.isfinite(res.f).all() and torch.isfinite(res.g).all()
    assert res.n_iters < 5000
    assert marginals_err(P, ma, mb) <= atol
    assert torch.all(P[pad_mask2d(ma, mb)] == 0)
    if dtype == torch.float64:  # and it is the right plan
        assert_matches_pot(P, C, ma, mb, eps)


@pytest.mark.parametrize("eps", [0.005, 0.001])
def test_small_eps_uniform_costs_match_solve_batch(eps):
    # Uniform costs in [0, 2] converge slowly at small eps; after a fixed number of iterations
    # the plan must still be finite and equal POT's batched log-domain solver (same update order).
    C, ma, mb = padded_problem(seed=19, B=4, n=8, m=10)
    P = sinkhorn(C, eps=eps, n_iters=300, mask_a=ma, mask_b=mb).plan
    assert torch.isfinite(P).all()
    cols = P.sum(1)
    assert torch.allclose(cols, mb.double() / mb.sum(1, keepdim=True), atol=1e-12)
    for k in range(C.shape[0]):
        Ck = real_block(C[k], ma[k], mb[k])[None]
        ref = ot.solve_batch(Ck, eps, max_iter=300, tol=0.0, method="log_sinkhorn", grad="detach")
        assert torch.allclose(real_block(P[k], ma[k], mb[k]), ref.plan[0], rtol=1e-7, atol=1e-12)


def test_zero_weight_tokens_get_no_mass():
    C, _, _ = padded_problem(seed=10, nan_pad=False)
    a = torch.ones(C.shape[:2], dtype=C.dtype)
    a[:, 0] = 0
    P = sinkhorn(C, a=a, eps=0.05, n_iters=50).plan
    assert torch.all(P[:, 0, :] == 0)
    assert torch.isfinite(P).all()


def test_potentials_reproduce_plan():
    C, ma, mb = padded_problem(seed=11, nan_pad=False)
    eps = 0.05
    res = sinkhorn(C, eps=eps, n_iters=30, mask_a=ma, mask_b=mb)
    recon = torch.exp((res.f[:, :, None] + res.g[:, None, :] - C) / eps)
    recon = torch.where(pad_mask2d(ma, mb), 0.0, recon)
    assert torch.allclose(recon, res.plan, rtol=1e-10, atol=1e-15)


# ----------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------


def test_gradcheck_unrolled_transport_loss():
    C, ma, mb = padded_problem(seed=12, B=3, n=4, m=5, nan_pad=False)
    C.requires_grad_(True)

    def fn(C):
        return transport_loss(C, ma, mb, eps=0.1, n_iters=8, grad="unrolled", reduction="none")

    assert torch.autograd.gradcheck(fn, (C,), eps=1e-6, atol=1e-6)


def test_gradcheck_unrolled_plan_and_alignment_loss():
    torch.manual_seed(0)
    C, ma, mb = padded_problem(seed=13, B=2, n=3, m=4, nan_pad=False)
    C.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda C: sinkhorn(C, eps=0.2, n_iters=6, mask_a=ma, mask_b=mb).plan, (C,), atol=1e-6
    )
    S = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    T = torch.randn(2, 4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda S: ot_alignment_loss(S, T, ma, mb, eps=0.1, n_iters=8, grad="unrolled"),
        (S,),
        atol=1e-6,
    )


def test_unrolled_gradient_differs_from_detached():
    # Guards against "unrolled" silently detaching the plan.
    C, ma, mb = padded_problem(seed=14, B=2, n=4, m=5, nan_pad=False)
    grads = {}
    for mode in ("detached", "unrolled"):
        Cg = C.clone().requires_grad_(True)
        transport_loss(Cg, ma, mb, eps=0.1, n_iters=20, grad=mode).backward()
        grads[mode] = Cg.grad
    assert not torch.allclose(grads["detached"], grads["unrolled"], atol=1e-6)


@pytest.mark.parametrize("reduction,scale", [("mean", 1 / 6), ("sum", 1.0), ("none", 1.0)])
def test_detached_gradient_is_the_plan(reduction, scale):
    C, ma, mb = padded_problem(seed=15, nan_pad=False)
    Cg = C.clone().requires_grad_(True)
    loss = transport_loss(Cg, ma, mb, eps=0.05, n_iters=40, grad="detached", reduction=reduction)
    (loss.sum() if reduction == "none" else loss).backward()
    P = sinkhorn(C, eps=0.05, n_iters=40, mask_a=ma, mask_b=mb).plan
    assert torch.allclose(Cg.grad, P * scale, rtol=1e-12, atol=1e-15)


def test_detached_alignment_loss_gradient_wrt_tokens():
    torch.manual_seed(1)
    _, ma, mb = padded_problem(seed=16, B=3, n=5, m=6)
    S = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    T = torch.randn(3, 6, 8, dtype=torch.float64)
    loss = ot_alignment_loss(S, T, ma, mb, eps=0.05, n_iters=30, grad="detached")
    (g,) = torch.autograd.grad(loss, S)
    P = sinkhorn(cosine_cost(S, T).detach(), eps=0.05, n_iters=30, mask_a=ma, mask_b=mb).plan
    (g_ref,) = torch.autograd.grad((P * cosine_cost(S, T)).sum((1, 2)).mean(), S)
    assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-14)
    assert torch.allclose(loss, (P * cosine_cost(S, T)).sum((1, 2)).mean())


def test_reductions():
    C, ma, mb = padded_problem(seed=17)
    none = transport_loss(C, ma, mb, reduction="none")
    assert none.shape == (C.shape[0],) and torch.isfinite(none).all()  # NaN padding ignored
    assert torch.allclose(transport_loss(C, ma, mb, reduction="mean"), none.mean())
    assert torch.allclose(transport_loss(C, ma, mb, reduction="sum"), none.sum())
    unrolled = transport_loss(C, ma, mb, grad="unrolled", reduction="none")
    assert torch.allclose(unrolled, none, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Cost
# ----------------------------------------------------------------------------------------------


def test_cosine_cost_matches_torch():
    torch.manual_seed(2)
    S, T = torch.randn(3, 4, 16, dtype=torch.float64), torch.randn(3, 5, 16, dtype=torch.float64)
    ref = 1 - F.cosine_similarity(S[:, :, None, :], T[:, None, :, :], dim=-1)
    assert torch.allclose(cosine_cost(S, T), ref, atol=1e-12)
    S[0, 0] = 0  # zero vector (zeroed padding): cost 1, not NaN
    C = cosine_cost(S, T)
    assert torch.all(C[0, 0] == 1)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_errors_shapes():
    C = torch.rand(2, 3, 4)
    with pytest.raises(ValueError, match=r"C must have shape \(B, n, m\).*unsqueeze"):
        sinkhorn(C[0])
    with pytest.raises(ValueError, match=r"mask_a has shape \(2, 4\).*needs \(2, 3\)"):
        sinkhorn(C, mask_a=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask_b has shape"):
        sinkhorn(C, mask_b=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"a has shape \(2, 4\).*needs \(2, 3\)"):
        sinkhorn(C, a=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"agree in batch size B and vector size d"):
        cosine_cost(torch.rand(2, 3, 8), torch.rand(2, 4, 7))
    with pytest.raises(ValueError, match=r"agree in batch size"):
        ot_alignment_loss(torch.rand(2, 3, 8), torch.rand(3, 4, 8), None, None)
    with pytest.raises(ValueError, match=r"S and T must have shapes"):
        cosine_cost(torch.rand(3, 8), torch.rand(4, 8))
    with pytest.raises(ValueError, match=r"teacher|mask_b has shape"):
        ot_alignment_loss(torch.rand(2, 3, 8), torch.rand(2, 4, 8), None, torch.ones(2, 5))


def test_errors_all_padding():
    C = torch.rand(3, 4, 5)
    ma = torch.ones(3, 4, dtype=torch.bool)
    ma[1] = False
    with pytest.raises(ValueError, match=r"Problem\(s\) \[1\] have no real token in mask_a"):
        sinkhorn(C, mask_a=ma)
    mb = torch.ones(3, 5, dtype=torch.bool)
    mb[2] = False
    with pytest.raises(ValueError, match=r"\[2\] have no real token in mask_b.*drop empty"):
        sinkhorn(C, mask_b=mb)
    with pytest.raises(ValueError, match=r"no real token in mask_a"):
        ot_alignment_loss(torch.rand(3, 4, 8), torch.rand(3, 5, 8), ma, None)


@pytest.mark.parametrize("eps", [0.0, -0.1, float("nan"), float("inf")])
def test_errors_eps(eps):
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0"):
        sinkhorn(torch.rand(1, 2, 2), eps=eps)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_errors_nonfinite_cost(bad):
    C = torch.rand(3, 4, 5)
    C[2, 1, 3] = bad
    with pytest.raises(ValueError, match=r"C contains NaN or inf.*problem\(s\) \[2\]"):
        sinkhorn(C)
    # ... but the same value at a padding position is fine.
    ma = torch.ones(3, 4, dtype=torch.bool)
    ma[2, 1] = False
    assert torch.isfinite(sinkhorn(C, mask_a=ma).plan).all()


def test_errors_other_arguments():
    C = torch.rand(2, 3, 4)
    with pytest.raises(ValueError, match=r"n_iters must be an integer >= 1"):
        sinkhorn(C, n_iters=0)
    with pytest.raises(ValueError, match=r"tol must be None"):
        sinkhorn(C, tol=-1.0)
    with pytest.raises(ValueError, match=r"negative, NaN or inf weights"):
        sinkhorn(C, a=torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"sums to zero"):
        sinkhorn(C, b=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"grad must be one of"):
        transport_loss(C, grad="implicit")
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        transport_loss(C, reduction="max")


# ----------------------------------------------------------------------------------------------
# Dtypes, autocast, devices
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype,expected",
    [
        (torch.float64, torch.float64),
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float32),
    ],
)
def test_compute_dtype(dtype, expected):
    C = (torch.rand(2, 5, 6) * 2).to(dtype)
    P = sinkhorn(C, eps=0.01, n_iters=50).plan
    assert P.dtype == expected and torch.isfinite(P).all()


def test_autocast_bfloat16():
    torch.manual_seed(3)
    S = torch.randn(4, 6, 32, requires_grad=True)
    T = torch.randn(4, 7, 32)
    ma = torch.ones(4, 6, dtype=torch.bool)
    ma[0, 4:] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        C = cosine_cost(S, T)  # the batched product runs in bfloat16
        P = sinkhorn(C.to(torch.bfloat16), eps=0.01, n_iters=50, mask_a=ma).plan
        losses = {
            g: ot_alignment_loss(S, T, ma, None, eps=0.01, grad=g) for g in ("detached", "unrolled")
        }
    assert torch.allclose(C.float(), cosine_cost(S, T), atol=0.05)
    assert P.dtype == torch.float32 and torch.isfinite(P).all()  # iterations ran in float32
    assert torch.all(P[0, 4:] == 0)
    for loss in losses.values():
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        (g,) = torch.autograd.grad(loss, S)
        assert torch.isfinite(g).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_cuda_matches_cpu(dtype, atol):
    C, ma, mb = padded_problem(seed=18, dtype=dtype)
    cpu = sinkhorn(C, eps=0.05, n_iters=100, mask_a=ma, mask_b=mb).plan
    dev = sinkhorn(C.cuda(), eps=0.05, n_iters=100, mask_a=ma.cuda(), mask_b=mb.cuda())
    assert dev.plan.device.type == "cuda"
    assert torch.allclose(dev.plan.cpu(), cpu, atol=atol)
    # early stopping stops at the same iteration as on the CPU (at eps = 0.05 one of these
    # problems needs more than 5000 iterations for tol = 1e-4 on both devices; at 0.1, 360)
    early = sinkhorn(C.cuda(), eps=0.1, n_iters=5000, tol=1e-4, mask_a=ma.cuda(), mask_b=mb.cuda())
    early_cpu = sinkhorn(C, eps=0.1, n_iters=5000, tol=1e-4, mask_a=ma, mask_b=mb)
    assert early.n_iters == early_cpu.n_iters < 5000
    assert torch.allclose(early.plan.cpu(), early_cpu.plan, atol=atol)
    Cg = C.cuda().requires_grad_(True)
    loss = transport_loss(Cg, ma.cuda(), mb.cuda(), grad="unrolled")
    loss.backward()
    assert torch.isfinite(Cg.grad).all()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        P = sinkhorn(C.cuda().to(torch.bfloat16), mask_a=ma.cuda(), mask_b=mb.cuda()).plan
    assert P.dtype == torch.float32 and torch.isfinite(P).all()
