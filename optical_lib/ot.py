r"""Entropic optimal transport (batched log-domain Sinkhorn) and the OPTICAL loss.

OPTICAL aligns the student's token vectors of a sentence in language X with the teacher's token
vectors of its English translation by entropic optimal transport, and minimises the transport
cost :math:`\langle P, C\rangle_F`, where :math:`C` is the cosine-distance cost matrix and
:math:`P` the Sinkhorn plan. The book section "Background: optimal transport"
(``book/background.md``) explains the problem, the log-domain updates and why they are stable.

Public functions
----------------
- :func:`sinkhorn`: batched, padded, log-domain Sinkhorn; returns a :class:`SinkhornResult`.
- :func:`cosine_cost`: ``1 - cos`` between two batches of token matrices.
- :func:`transport_loss`: :math:`\langle P, C\rangle_F` for a given cost ``C`` (with gradient
  mode ``"detached"`` or ``"unrolled"`` and a batch reduction).
- :func:`ot_alignment_loss`: the OPTICAL loss, ``transport_loss(cosine_cost(S, T), ...)``.

Conventions
-----------
Shapes are ``C: (B, n, m)`` (``B`` problems, ``n`` source/student tokens, ``m`` target/teacher
tokens). Masks are boolean (or 0/1 integer, as Hugging Face attention masks) with ``True``/1 for a
real token and ``False``/0 for padding; they may differ from problem to problem (different
lengths, left or right padding). Everything runs on the device of ``C`` with no host
synchronisation inside the iterations, except the optional early-stopping check.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "SinkhornResult",
    "sinkhorn",
    "cosine_cost",
    "transport_loss",
    "ot_alignment_loss",
]

_GRAD_MODES = ("detached", "unrolled")
_REDUCTIONS = ("mean", "sum", "none")
_NEG_INF = float("-inf")


class SinkhornResult(NamedTuple):
    """Result of :func:`sinkhorn`.

    Attributes
    ----------
    plan : Tensor, shape (B, n, m)
        Transport plan :math:`P`, exactly zero on padding rows and columns. Its dtype is the
        compute dtype (float32 for float16/bfloat16 inputs, else the dtype of ``C``).
    f : Tensor, shape (B, n)
        Dual potential of the rows in cost units (0 on padding and on zero-weight tokens).
    g : Tensor, shape (B, m)
        Dual potential of the columns in cost units (0 on padding and on zero-weight tokens).
    n_iters : int
        Number of full iterations (one row update followed by one column update) performed.
    """

    plan: Tensor
    f: Tensor
    g: Tensor
    n_iters: int


# ----------------------------------------------------------------------------------------------
# Input preparation and validation
# ----------------------------------------------------------------------------------------------


def _as_mask(mask: Tensor | None, shape: tuple[int, int], name: str, device) -> Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        mask = torch.as_tensor(mask)
    if tuple(mask.shape) != shape:
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)} but the cost matrix needs {shape} "
            f"(one entry per token, True/1 = real token, False/0 = padding)."
        )
    if mask.dtype != torch.bool:
        mask = mask != 0
    return mask.to(device)


def _as_weights(w: Tensor | None, shape: tuple[int, int], name: str, like: Tensor) -> Tensor | None:
    if w is None:
        return None
    if not isinstance(w, Tensor):
        w = torch.as_tensor(w)
    if tuple(w.shape) != shape:
        raise ValueError(
            f"{name} has shape {tuple(w.shape)} but the cost matrix needs {shape} "
            f"(one non-negative weight per token; it is renormalised over the real tokens)."
        )
    return w.to(device=like.device, dtype=like.dtype)


def _check_scalars(eps, n_iters, tol, check_every) -> float:
    try:
        eps_f = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a positive number, got {eps!r}.") from None
    if not (eps_f > 0 and math.isfinite(eps_f)):
        raise ValueError(
            f"eps must be a finite number > 0 (the entropic regularisation strength), got {eps!r}; "
            f"typical values are 0.01 to 0.1 for cosine costs in [0, 2]."
        )
    if isinstance(n_iters, bool) or not isinstance(n_iters, int) or n_iters < 1:
        raise ValueError(f"n_iters must be an integer >= 1, got {n_iters!r}.")
    if tol is not None and not (float(tol) > 0):
        raise ValueError(f"tol must be None (fixed iterations) or a number > 0, got {tol!r}.")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be an integer >= 1, got {check_every!r}.")
    return eps_f


def _problems(flags: Tensor) -> list[int]:
    return torch.nonzero(~flags).flatten().tolist()


def _validate(
    K: Tensor,
    a: Tensor | None,
    b: Tensor | None,
    mask_a: Tensor | None,
    mask_b: Tensor | None,
) -> None:
    """Data-dependent checks, gathered into one host synchronisation.

    ``K`` is the kernel -C/eps with padding already set to 0, so a NaN/inf in its per-problem
    sum means a NaN/inf (or an overflow of C/eps) at a real entry of that problem.
    """
    checks = {"finite": torch.isfinite(K.sum(dim=(1, 2)))}
    if mask_a is not None:
        checks["rows"] = mask_a.any(1)
    if mask_b is not None:
        checks["cols"] = mask_b.any(1)
    for name, w, m in (("a", a, mask_a), ("b", b, mask_b)):
        if w is None:
            continue
        real = torch.ones_like(w, dtype=torch.bool) if m is None else m
        ok = (torch.isfinite(w) & (w >= 0)) | ~real
        checks[name] = ok.all(1)
        checks[name + "_sum"] = torch.where(real, w, torch.zeros_like(w)).sum(1) > 0
    names = list(checks)
    flags = torch.stack([checks[k] for k in names])  # (k, B)
    if bool(flags.all()):
        return
    # Error path: find the first failing check and say what to do.
    for name in names:
        bad = _problems(checks[name])
        if not bad:
            continue
        shown = bad[:10]
        if name == "finite":
            raise ValueError(
                f"C contains NaN or inf at real (non-padding) entries of problem(s) {shown} "
                f"(or C/eps overflows); check the token vectors (NaN from the encoder, fp16 "
                f"overflow) and mask padding tokens with mask_a/mask_b."
            )
        if name == "rows":
            raise ValueError(
                f"Problem(s) {shown} have no real token in mask_a (all padding on the row "
                f"side); drop empty sequences from the batch before calling sinkhorn."
            )
        if name == "cols":
            raise ValueError(
                f"Problem(s) {shown} have no real token in mask_b (all padding on the column "
                f"side); drop empty sequences from the batch before calling sinkhorn."
            )
        w = name[0]
        if name.endswith("_sum"):
            raise ValueError(
                f"Marginal {w} sums to zero over the real tokens of problem(s) {shown}; give "
                f"at least one real token a positive weight (or pass {w}=None for uniform)."
            )
        raise ValueError(
            f"Marginal {w} has negative, NaN or inf weights on real tokens of problem(s) "
            f"{shown}; weights must be finite and >= 0."
        )


def _log_marginal(w: Tensor | None, mask: Tensor | None, size: int, like: Tensor):
    """Return (log marginal with -inf on padding, effective mask or None)."""
    B = like.shape[0]
    if w is None and mask is None:
        return like.new_full((B, size), -math.log(size)), None
    if w is None:
        count = mask.sum(1, keepdim=True).clamp_min(1).to(like.dtype)
        logw = (-torch.log(count)).expand(B, size)
        return torch.where(mask, logw, _NEG_INF), mask
    real = w > 0 if mask is None else mask & (w > 0)
    w = torch.where(real, w, torch.zeros_like(w))
    w = w / w.sum(1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    logw = torch.log(torch.where(real, w, torch.ones_like(w)))
    return torch.where(real, logw, _NEG_INF), real


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (float16, bfloat16, float32, ints) -> float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _autocast_enabled(device_type: str) -> bool:
    if device_type not in ("cpu", "cuda"):
        return False
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # pragma: no cover - torch < 2.4 has no device_type argument
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


# ----------------------------------------------------------------------------------------------
# Sinkhorn
# ----------------------------------------------------------------------------------------------

def _log_softmax_public(x: Tensor, dim: int, out: Tensor) -> Tensor:
    """Log-softmax of ``x`` along ``dim`` written into ``out`` (public API, allocates)."""
    return out.copy_(torch.log_softmax(x, dim))


def _log_softmax_private(x: Tensor, dim: int, out: Tensor) -> Tensor:
    """The same with torch's private ``out=`` variant: a fused max / exp-sum / subtract
    kernel writing into a preallocated buffer, about 2x faster on CPU than
    ``torch.logsumexp``, which allocates its temporaries every call."""
    return torch._log_softmax(x, dim, False, out=out)


def _pick_log_softmax():
    """The private kernel if this torch build has it and it agrees with the public one on a
    probe; the public fallback otherwise (tested in ``tests/test_ot.py``)."""
    probe = torch.tensor([[0.0, 1.0, -2.0]])
    try:
        fast = _log_softmax_private(probe, 1, torch.empty_like(probe))
    except (AttributeError, RuntimeError, TypeError):
        return _log_softmax_public
    if not torch.allclose(fast, torch.log_softmax(probe, 1)):
        return _log_softmax_public
    return _log_softmax_private


_log_softmax_into = _pick_log_softmax()


def sinkhorn(
    C: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    eps: float = 0.05,
    n_iters: int = 100,
    tol: float | None = None,
    mask_a: Tensor | None = None,
    mask_b: Tensor | None = None,
    *,
    check_every: int = 10,
    validate: bool = True,
) -> SinkhornResult:
    r"""Batched entropic optimal transport by log-domain Sinkhorn iterations.

    Solves, independently for each problem :math:`k = 1..B` of the batch,

    .. math::

        P^\star = \mathop{\arg\min}_{P \ge 0} \ \langle P, C\rangle_F - \varepsilon H(P)
        \quad \text{s.t.} \quad P\mathbf 1 = a,\ \ P^\top \mathbf 1 = b,
        \qquad H(P) = -\sum_{ij} P_{ij} (\log P_{ij} - 1),

    restricted to the real (non-padding) rows and columns. The solution is
    :math:`P_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)` for dual potentials
    :math:`f, g`, which are found by alternating the log-domain updates

    .. math::

        f_i &\leftarrow \varepsilon \log a_i
              - \varepsilon \operatorname{LSE}_j\big((g_j - C_{ij})/\varepsilon\big), \\
        g_j &\leftarrow \varepsilon \log b_j
              - \varepsilon \operatorname{LSE}_i\big((f_i - C_{ij})/\varepsilon\big),

    with :math:`\operatorname{LSE}_j(x_j) = \log\sum_j e^{x_j}` computed stably (max-shifted), so
    the iterations neither overflow nor underflow at small ``eps`` (0.01 and below). Internally
    the scaled potentials :math:`u = f/\varepsilon, v = g/\varepsilon` and the kernel
    :math:`K = -C/\varepsilon` are used. One iteration is a row update followed by a column
    update, so after any number of iterations the column marginals equal ``b`` up to rounding
    and only the row marginals carry the remaining error. See the book section "Background:
    optimal transport" (``book/background.md``).

    Parameters
    ----------
    C : Tensor, shape (B, n, m)
        Cost matrices. Any floating dtype; float16/bfloat16 are upcast and the iterations run in
        float32 (float64 stays float64). Entries at padding positions are ignored (they may be
        anything, NaN included).
    a : Tensor, shape (B, n), optional
        Row (source) weights, non-negative. Renormalised to sum to 1 over the real tokens of each
        problem. Default: uniform over the real tokens. Zero-weight tokens are treated like
        padding (their plan rows are zero).
    b : Tensor, shape (B, m), optional
        Column (target) weights, as ``a``.
    eps : float
        Entropic regularisation :math:`\varepsilon > 0`, in cost units.
    n_iters : int
        Maximum number of iterations (exactly this many when ``tol`` is None).
    tol : float, optional
        Early stopping: every ``check_every`` iterations, stop when the largest (over problems)
        L1 row-marginal error :math:`\sum_i |(P\mathbf 1)_i - a_i|` is below ``tol``. Each check
        is one host synchronisation; with ``tol=None`` the loop has none.
    mask_a : Tensor, shape (B, n), optional
        Row padding mask, ``True``/1 = real token, ``False``/0 = padding. Default: all real.
    mask_b : Tensor, shape (B, m), optional
        Column padding mask, as ``mask_a``.
    check_every : int
        How often the ``tol`` check runs (in iterations).
    validate : bool
        Check the data (NaN/inf in ``C`` at real entries, empty problems, bad weights) and raise
        a ValueError. Costs one host synchronisation per call (before the loop); shape and
        argument checks are always done.

    Returns
    -------
    SinkhornResult
        ``plan`` (B, n, m), exactly 0 on padding; ``f`` (B, n) and ``g`` (B, m) dual potentials
        in cost units (0 on padding); ``n_iters`` the number of iterations performed.

    Raises
    ------
    ValueError
        Wrong shapes, ``eps <= 0``, ``n_iters < 1``, a problem whose rows or columns are all
        padding, NaN/inf in ``C`` at real entries, negative/non-finite weights.

    Notes
    -----
    Gradients: if autograd is enabled and ``C`` (or ``a``, ``b``) requires grad, the iterations
    are recorded and backpropagation goes through all of them ("unrolled"; memory grows with
    ``n_iters * B * n * m``). Otherwise a faster in-place path runs without recording.

    Padding is handled exactly: the kernel is set once to a neutral 0 on padding rows/columns
    and the padding potentials are :math:`-\infty` (log of a zero marginal), so padding never
    exchanges mass with real tokens and the plan there is ``exp(-inf) = 0``.

    Examples
    --------
    >>> C = torch.rand(8, 5, 7)
    >>> res = sinkhorn(C, eps=0.05, n_iters=200)
    >>> res.plan.shape
    torch.Size([8, 5, 7])
    """
    if not isinstance(C, Tensor):
        raise ValueError(f"C must be a torch.Tensor of shape (B, n, m), got {type(C).__name__}.")
    if C.dim() != 3:
        raise ValueError(
            f"C must have shape (B, n, m) (a batch of cost matrices), got shape "
            f"{tuple(C.shape)}; use C.unsqueeze(0) for a single problem."
        )
    B, n, m = C.shape
    if B == 0 or n == 0 or m == 0:
        raise ValueError(f"C has an empty dimension {tuple(C.shape)}; need B, n, m >= 1.")
    if C.is_complex():
        raise ValueError("C must be real-valued, got a complex tensor.")
    eps = _check_scalars(eps, n_iters, tol, check_every)

    dtype = _compute_dtype(C.dtype)
    dev = C.device
    ma = _as_mask(mask_a, (B, n), "mask_a", dev)
    mb = _as_mask(mask_b, (B, m), "mask_b", dev)
    Cc = C.to(dtype)
    wa = _as_weights(a, (B, n), "a", Cc)
    wb = _as_weights(b, (B, m), "b", Cc)

    if _autocast_enabled(dev.type):  # iterate in float32/float64 whatever autocast says
        with torch.autocast(device_type=dev.type, enabled=False):
            return _sinkhorn(Cc, wa, wb, eps, n_iters, tol, ma, mb, check_every, validate)
    return _sinkhorn(Cc, wa, wb, eps, n_iters, tol, ma, mb, check_every, validate)


def _sinkhorn(C, a, b, eps, n_iters, tol, mask_a, mask_b, check_every, validate):
    B, n, m = C.shape
    loga, ma = _log_marginal(a, mask_a, n, C)
    logb, mb = _log_marginal(b, mask_b, m, C)
    padded = ma is not None or mb is not None
    if padded:
        ma_ = ma if ma is not None else torch.ones(B, n, dtype=torch.bool, device=C.device)
        mb_ = mb if mb is not None else torch.ones(B, m, dtype=torch.bool, device=C.device)
        mask2d = ma_[:, :, None] & mb_[:, None, :]  # (B, n, m)
        # Kernel K = -C/eps on real entries, a neutral 0 on padding (set once).
        K = torch.where(mask2d, C * (-1.0 / eps), torch.zeros((), dtype=C.dtype, device=C.device))
    else:
        ma_ = mb_ = mask2d = None
        K = C * (-1.0 / eps)
    if validate:
        _validate(K.detach(), a, b, mask_a, mask_b)

    v0 = torch.zeros_like(logb) if mb is None else torch.where(mb, 0.0, _NEG_INF).to(logb.dtype)
    grad_mode = torch.is_grad_enabled() and (
        C.requires_grad
        or (a is not None and a.requires_grad)
        or (b is not None and b.requires_grad)
    )
    a_lin = loga.exp() if tol is not None else None
    if grad_mode:
        u, v, it = _loop_autograd(K, loga, logb, v0, n_iters, tol, check_every, a_lin)
        plan = torch.exp(K + u[:, :, None] + v[:, None, :])
    else:
        with torch.no_grad():
            u, v, it, plan = _loop_fast(
                K, loga, logb, v0, n_iters, tol, check_every, a_lin, ma_, mb_
            )
    if ma is not None:
        f = torch.where(ma, u, 0.0) * eps
    else:
        f = u * eps
    if mb is not None:
        g = torch.where(mb, v, 0.0) * eps
    else:
        g = v * eps
    return SinkhornResult(plan, f, g, it)


def _converged(u: Tensor, lse: Tensor, a_lin: Tensor, tol: float) -> bool:
    # Row sums of the current plan are exp(u + LSE_j(K + v)); -inf rows (padding) give 0 = a.
    err = (torch.exp(u + lse) - a_lin).abs().sum(1).max()
    return bool(err < tol)  # the only host synchronisation of the loop


def _loop_autograd(K, loga, logb, v, n_iters, tol, check_every, a_lin):
    u = None
    for k in range(n_iters):
        lse = torch.logsumexp(K + v[:, None, :], dim=2)
        if tol is not None and k > 0 and k % check_every == 0:
            if _converged(u.detach(), lse.detach(), a_lin, tol):
                return u, v, k
        u = loga - lse
        v = logb - torch.logsumexp(K + u[:, :, None], dim=1)
    return u, v, n_iters


def _loop_fast(K, loga, logb, v, n_iters, tol, check_every, a_lin, ma, mb):
    """In-place, allocation-free iterations (no autograd).

    ``LSE_j(x_ij)`` is read off a fused log-softmax as ``x_ij* - log_softmax(x)_ij*`` at one
    fixed real column ``j*`` per row (the cheapest real column, chosen once), which is exact
    up to rounding and about twice as fast on CPU as ``torch.logsumexp``.
    """
    B, n, m = K.shape
    neg_inf = torch.full((), _NEG_INF, dtype=K.dtype, device=K.device)
    # Reference column per row / row per column: a real index, preferring the cheapest entry.
    krow = K if mb is None else torch.where(mb[:, None, :], K, neg_inf)
    jstar = krow.max(dim=2, keepdim=True).indices  # (B, n, 1); faster than argmax on CPU
    kcol = K if ma is None else torch.where(ma[:, :, None], K, neg_inf)
    istar = kcol.max(dim=1, keepdim=True).indices  # (B, 1, m)
    del krow, kcol
    K = K.contiguous()
    # buf = K + potential, out = its log-softmax; stacked so that one index_select reads both.
    work = torch.empty((2, B, n, m), dtype=K.dtype, device=K.device)
    buf, out = work[0], work[1]
    # Flat indices of (buf, out)[b, i, j*(b, i)] and (buf, out)[b, i*(b, j), j] in work.
    ar = torch.arange
    dev = K.device
    base_rows = (ar(2 * B * n, device=dev).view(2, B, n)) * m
    jflat = (base_rows + jstar.squeeze(2).unsqueeze(0)).reshape(-1)
    base_cols = ar(2 * B, device=dev).view(2, B, 1) * (n * m) + ar(m, device=dev)
    iflat = (base_cols + istar.squeeze(1).unsqueeze(0) * m).reshape(-1)
    flat = work.view(-1)
    u = None
    it = n_iters
    for k in range(n_iters):
        torch.add(K, v[:, None, :], out=buf)
        _log_softmax_into(buf, 2, out)
        ref = flat.index_select(0, jflat).view(2, B, n)  # x_ij* and log_softmax(x)_ij*
        lse = ref[0] - ref[1]
        if tol is not None and k > 0 and k % check_every == 0 and _converged(u, lse, a_lin, tol):
            it = k
            break
        u = loga - lse
        torch.add(K, u[:, :, None], out=buf)
        _log_softmax_into(buf, 1, out)
        ref = flat.index_select(0, iflat).view(2, B, m)
        v = logb - (ref[0] - ref[1])
    del work, buf, out, flat
    plan = K.add_(u[:, :, None]).add_(v[:, None, :]).exp_()  # K is private to this call
    return u, v, it, plan


# ----------------------------------------------------------------------------------------------
# Costs and losses
# ----------------------------------------------------------------------------------------------


def cosine_cost(S: Tensor, T: Tensor, eps: float = 1e-8) -> Tensor:
    r"""Cosine-distance cost between two batches of token matrices.

    .. math:: C_{kij} = 1 - \frac{\langle s_{ki}, t_{kj}\rangle}
              {\max(\lVert s_{ki}\rVert, \epsilon) \max(\lVert t_{kj}\rVert, \epsilon)}

    Parameters
    ----------
    S : Tensor, shape (B, n, d)
        Student (source) token vectors.
    T : Tensor, shape (B, m, d)
        Teacher (target) token vectors.
    eps : float
        Floor on the vector norms, so that zero vectors (e.g. zeroed padding) give cost 1
        instead of NaN.

    Returns
    -------
    Tensor, shape (B, n, m)
        ``1 - cos`` in :math:`[0, 2]` (up to rounding); differentiable in ``S`` and ``T``.
        Under autocast the batched product runs in the autocast dtype (``sinkhorn`` upcasts).
    """
    if not isinstance(S, Tensor) or not isinstance(T, Tensor):
        raise ValueError("S and T must be torch.Tensors of shapes (B, n, d) and (B, m, d).")
    if S.dim() != 3 or T.dim() != 3:
        raise ValueError(
            f"S and T must have shapes (B, n, d) and (B, m, d), got {tuple(S.shape)} and "
            f"{tuple(T.shape)}; add a batch dimension with .unsqueeze(0) for one sentence pair."
        )
    if S.shape[0] != T.shape[0] or S.shape[2] != T.shape[2]:
        raise ValueError(
            f"S {tuple(S.shape)} and T {tuple(T.shape)} must agree in batch size B and vector "
            f"size d; project the teacher and student vectors to the same size first."
        )
    # Scale the (B, n, m) product rather than normalising the (B, n, d) inputs: d >> m.
    rs = torch.linalg.vector_norm(S, dim=-1).clamp_min(eps).reciprocal()
    rt = torch.linalg.vector_norm(T, dim=-1).clamp_min(eps).reciprocal()
    return 1.0 - torch.bmm(S, T.transpose(1, 2)) * rs[:, :, None] * rt[:, None, :]


def transport_loss(
    C: Tensor,
    mask_a: Tensor | None = None,
    mask_b: Tensor | None = None,
    eps: float = 0.05,
    n_iters: int = 50,
    grad: str = "detached",
    reduction: str = "mean",
    *,
    tol: float | None = None,
    validate: bool = True,
) -> Tensor:
    r"""Transport cost :math:`\langle P, C\rangle_F` of the Sinkhorn plan of ``C``.

    .. math:: \ell_k = \sum_{ij} P^{(k)}_{ij} C^{(k)}_{ij}, \qquad
              P^{(k)} = \mathrm{sinkhorn}(C^{(k)})

    with uniform marginals over the real tokens (so each :math:`P^{(k)}` sums to 1 and
    :math:`\ell_k` is an average cost per unit of mass).

    Parameters
    ----------
    C : Tensor, shape (B, n, m)
        Cost matrices (any float dtype; the loss is computed in float32 or float64).
    mask_a, mask_b : Tensor, shape (B, n) / (B, m), optional
        Padding masks (True/1 = real token), see :func:`sinkhorn`.
    eps : float
        Entropic regularisation.
    n_iters : int
        Sinkhorn iterations (fixed unless ``tol`` is given).
    grad : {"detached", "unrolled"}
        ``"detached"``: the plan is computed under ``no_grad`` and treated as a fixed soft
        alignment, so :math:`\partial \ell_k / \partial C^{(k)} = P^{(k)}` (cheap, no memory for
        the iterations). ``"unrolled"``: backpropagate through all Sinkhorn iterations.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` over the B problems, ``"sum"`` over them, or ``"none"`` for the (B,) vector.
    tol, validate
        Passed to :func:`sinkhorn`.

    Returns
    -------
    Tensor
        Scalar (``"mean"``, ``"sum"``) or shape (B,) (``"none"``).
    """
    if grad not in _GRAD_MODES:
        raise ValueError(f"grad must be one of {_GRAD_MODES}, got {grad!r}.")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    kw = dict(eps=eps, n_iters=n_iters, tol=tol, mask_a=mask_a, mask_b=mask_b, validate=validate)
    if grad == "detached":
        with torch.no_grad():
            res = sinkhorn(C.detach(), **kw)
    else:
        res = sinkhorn(C, **kw)
    P = res.plan
    Cc = C.to(P.dtype)
    if mask_a is not None or mask_b is not None:
        # P is exactly 0 on padding, but C may hold NaN/inf there. Zero C itself (not the
        # product): the product's gradient with respect to P is C, and NaN * 0 would leak
        # NaN into every entry's gradient through the unrolled iterations.
        B, n, m = C.shape
        ma = _as_mask(mask_a, (B, n), "mask_a", C.device)
        mb = _as_mask(mask_b, (B, m), "mask_b", C.device)
        ma = ma if ma is not None else torch.ones(B, n, dtype=torch.bool, device=C.device)
        mb = mb if mb is not None else torch.ones(B, m, dtype=torch.bool, device=C.device)
        Cc = torch.where(ma[:, :, None] & mb[:, None, :], Cc, 0.0)
    per = (P * Cc).sum(dim=(1, 2))
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    return per


def ot_alignment_loss(
    student_tokens: Tensor,
    teacher_tokens: Tensor,
    student_mask: Tensor | None = None,
    teacher_mask: Tensor | None = None,
    eps: float = 0.05,
    n_iters: int = 50,
    grad: str = "detached",
    reduction: str = "mean",
    *,
    tol: float | None = None,
    validate: bool = True,
) -> Tensor:
    r"""The OPTICAL token-alignment loss.

    .. math:: \mathcal L = \operatorname{reduce}_k \ \langle P^{(k)}, C^{(k)}\rangle_F, \qquad
              C^{(k)} = 1 - \cos(S^{(k)}, T^{(k)}), \quad P^{(k)} = \mathrm{sinkhorn}(C^{(k)})

    i.e. ``transport_loss(cosine_cost(student_tokens, teacher_tokens), ...)``: the student's
    tokens of the sentence in language X are softly aligned by entropic OT with the teacher's
    tokens of its English translation, and the aligned cosine distance is minimised. See the
    book section "Background: optimal transport" (``book/background.md``).

    Parameters
    ----------
    student_tokens : Tensor, shape (B, n, d)
        Student token vectors (the gradient flows into them).
    teacher_tokens : Tensor, shape (B, m, d)
        Teacher token vectors (usually from a frozen model; detach them if so).
    student_mask : Tensor, shape (B, n), optional
        Attention mask of the student batch (True/1 = real token).
    teacher_mask : Tensor, shape (B, m), optional
        Attention mask of the teacher batch.
    eps : float
        Entropic regularisation (cosine costs are in [0, 2]).
    n_iters : int
        Sinkhorn iterations.
    grad : {"detached", "unrolled"}
        Gradient mode, see :func:`transport_loss`.
    reduction : {"mean", "sum", "none"}
        Over the B sentence pairs, see :func:`transport_loss`.
    tol, validate
        Passed to :func:`sinkhorn`.

    Returns
    -------
    Tensor
        Scalar, or shape (B,) for ``reduction="none"``.
    """
    C = cosine_cost(student_tokens, teacher_tokens)
    return transport_loss(
        C,
        student_mask,
        teacher_mask,
        eps=eps,
        n_iters=n_iters,
        grad=grad,
        reduction=reduction,
        tol=tol,
        validate=validate,
    )
