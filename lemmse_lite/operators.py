"""Linear forward operators and pre-inverses (`course/00_inverse_problems.md`, `eq-forward`,
`eq-pre-inverse`).

Every operator is a callable on images ``(B, C, H, W) -> (B, C, H, W)`` with

* ``A.T``            the adjoint, as an operator;
* ``A.pinv()``       the exact pseudo-inverse (singular values ``s > 1e-6 * s_max`` inverted);
* ``A.tikhonov(eps)`` the regularised inverse ``(AᵀA + εI)⁻¹Aᵀ``;
* ``A.kind``         ``"identity"``, ``"diagonal"``, ``"fourier"`` or ``"general"``: a read-only
  description (the estimators pick their fast path from the operator's class, `eq-le-general`:
  :class:`Diagonal` ``B`` → pattern groups, :class:`FourierMultiplier` ``B`` → one whitening);
* ``A.matrix(shape)`` the dense ``(n, n)`` matrix acting on ``x.reshape(-1)`` (C, then H, then W).

Conventions (`course/00_inverse_problems.md`): masks are 1 = observed, 0 = missing; a blur is a true circular
convolution ``(Ax)[n] = Σ_j k[j] x[n − j]`` with the kernel centred at ``(kh//2, kw//2)``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch

from .checks import all_finite, check_positive_int, check_sigma, check_sigma_value

RANK_TOL = 1e-6  # a singular value counts when s > RANK_TOL * s_max (`course/05_closed_form.md`, `eq-le-general`)


# ----------------------------------------------------------------------------- validation

def check_images(x, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is a finite floating tensor of shape (B, C, H, W)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have 4 dimensions (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not all_finite(x):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def _as_float_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return value


def _check_eps(eps) -> float:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return float(eps)


# ----------------------------------------------------------------------------- base class

class Operator:
    """A linear operator on images (B, C, H, W). Subclasses implement ``_apply``."""

    _kind = "general"

    @property
    def kind(self) -> str:
        """Read-only description: ``"identity"``, ``"diagonal"``, ``"fourier"`` or ``"general"``."""
        return self._kind

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        return self._apply(x)

    def _apply(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def T(self) -> Operator:
        raise NotImplementedError(f"{type(self).__name__} has no adjoint")

    def pinv(self) -> Operator:
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form pseudo-inverse; use "
            "DenseOperator.from_operator(op, shape=(C, H, W)).pinv() on small images"
        )

    def tikhonov(self, eps: float) -> Operator:
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form Tikhonov inverse; use "
            "DenseOperator.from_operator(op, shape=(C, H, W)).tikhonov(eps) on small images"
        )

    @property
    def is_equivariant(self) -> bool:
        """True when the operator commutes with every circular shift."""
        return isinstance(self, (Denoising, FourierMultiplier))

    def matrix(self, shape, dtype=torch.float64, device=None) -> torch.Tensor:
        """Dense matrix ``M`` with ``op(x).reshape(-1) = M @ x.reshape(-1)``; shape = (C, H, W)."""
        c, h, w = shape
        n = c * h * w
        basis = torch.eye(n, dtype=dtype, device=device).reshape(n, c, h, w)
        return self._apply(basis).reshape(n, n).T.contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# ----------------------------------------------------------------------------- identity / diagonal

def _check_non_negative(values: torch.Tensor, name: str) -> torch.Tensor:
    """Masks and diagonal maps are finite and ≥ 0: 0/1 masks, the ε-mask (ε > 0 on the holes) and any
    non-binary weighting in between (`course/00_inverse_problems.md`, `eq-pre-inverse`)."""
    if (values < 0).any():
        raise ValueError(f"{name} must have non-negative entries (1 = observed, 0 = missing), "
                         f"got a minimum of {values.min().item():g}")
    return values


def _normalise_mask(mask, name: str = "mask") -> torch.Tensor:
    """Accept (H,W), (1,H,W), (C,H,W), (1,1,H,W), (1,C,H,W); return (C', H, W), C' ∈ {1, C}.
    Entries must be finite and non-negative (a ValueError names ``name`` otherwise)."""
    mask = _check_non_negative(_as_float_tensor(mask, name), name)
    if mask.dim() == 2:
        mask = mask[None]
    elif mask.dim() == 4:
        if mask.shape[0] != 1:
            raise ValueError(f"{name} with 4 dimensions must have shape (1, C, H, W), got {tuple(mask.shape)}")
        mask = mask[0]
    elif mask.dim() != 3:
        raise ValueError(
            f"{name} must have shape (H,W), (1,H,W), (C,H,W), (1,1,H,W) or (1,C,H,W), got {tuple(mask.shape)}"
        )
    return mask


class Diagonal(Operator):
    """``A x = b ⊙ x`` with a fixed real map ``b`` of shape (C', H, W), C' ∈ {1, C}."""

    _kind = "diagonal"

    def __init__(self, b: torch.Tensor, name: str = "b"):
        self.b = _normalise_mask(b, name)

    def diagonal(self, shape) -> torch.Tensor:
        """``b`` broadcast to ``shape = (C, H, W)``, with a clear error on mismatch."""
        c, h, w = shape
        if tuple(self.b.shape[-2:]) != (h, w):
            raise ValueError(
                f"mask of spatial size {tuple(self.b.shape[-2:])} does not match images of size {(h, w)}"
            )
        if self.b.shape[0] not in (1, c):
            raise ValueError(f"mask has {self.b.shape[0]} channels but images have {c}")
        return self.b.expand(c, h, w)

    def _apply(self, x):
        b = self.diagonal(x.shape[1:]).to(device=x.device, dtype=x.dtype)
        return x * b

    @property
    def T(self):
        return self

    def pinv(self):
        b = self.b.double()
        keep = b.abs() > RANK_TOL * b.abs().max()
        inv = torch.where(keep, 1.0 / torch.where(keep, b, torch.ones_like(b)), torch.zeros_like(b))
        return Diagonal(inv.to(self.b.dtype))

    def tikhonov(self, eps):
        eps = _check_eps(eps)
        b = self.b.double()
        return Diagonal((b / (b * b + eps)).to(self.b.dtype))

    def __repr__(self):
        return f"{type(self).__name__}(b of shape {tuple(self.b.shape)})"


class Inpainting(Diagonal):
    """Inpainting ``A = diag(mask)`` (1 = observed, 0 = missing; any real values are accepted,
    e.g. the ε-mask pre-inverse ``Inpainting(eps_mask(mask, eps))``)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__(mask, "mask")

    @property
    def mask(self) -> torch.Tensor:
        return self.b


class Denoising(Operator):
    """Denoising, ``A = I``."""

    _kind = "identity"

    def _apply(self, x):
        return x

    @property
    def T(self):
        return self

    def pinv(self):
        return self

    def tikhonov(self, eps):
        eps = _check_eps(eps)
        return FourierMultiplier(lambda h, w: torch.full((h, w), 1.0 / (1.0 + eps), dtype=torch.complex128),
                                 f"Denoising.tikhonov({eps:g})")

    def matrix(self, shape, dtype=torch.float64, device=None):
        n = math.prod(shape)
        return torch.eye(n, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- Fourier multipliers

class FourierMultiplier(Operator):
    """Circular, translation-equivariant operator ``x ↦ F⁻¹(m ⊙ F x)``, one multiplier for all
    channels. ``spectrum(h, w)`` returns the complex128 multiplier ``m`` of shape (h, w); it must be
    Hermitian (``m[-f] = conj(m[f])``) so that real images stay real."""

    _kind = "fourier"

    #: Image sizes whose multiplier stays cached (least recently used dropped first): an operator
    #: applied to images of many sizes holds at most this many (h, w) complex128 arrays.
    SPECTRUM_CACHE = 8

    def __init__(self, spectrum: Callable[[int, int], torch.Tensor], name: str = "FourierMultiplier"):
        self._spectrum_fn = spectrum
        self._cache: OrderedDict = OrderedDict()
        self.name = name

    def spectrum(self, h: int, w: int) -> torch.Tensor:
        """The (h, w) complex128 multiplier, cached for the last :data:`SPECTRUM_CACHE` sizes."""
        if (h, w) in self._cache:
            self._cache.move_to_end((h, w))
        else:
            self._cache[(h, w)] = self._spectrum_fn(h, w)
            if len(self._cache) > self.SPECTRUM_CACHE:
                self._cache.popitem(last=False)
        return self._cache[(h, w)]

    def _apply(self, x):
        h, w = x.shape[-2:]
        m = self.spectrum(h, w)[:, : w // 2 + 1]
        cdtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        xf = torch.fft.rfft2(x)
        return torch.fft.irfft2(xf * m.to(device=x.device, dtype=cdtype), s=(h, w))

    def _derived(self, fn, name):
        return FourierMultiplier(lambda h, w: fn(self.spectrum(h, w)), name)

    @property
    def T(self):
        return self._derived(torch.conj, f"{self.name}.T")

    def pinv(self):
        def inv(m):
            keep = m.abs() > RANK_TOL * m.abs().max()
            return torch.where(keep, 1.0 / torch.where(keep, m, torch.ones_like(m)), torch.zeros_like(m))

        return self._derived(inv, f"{self.name}.pinv()")

    def tikhonov(self, eps):
        eps = _check_eps(eps)
        return self._derived(lambda m: m.conj() / (m.abs() ** 2 + eps), f"{self.name}.tikhonov({eps:g})")

    def patch_covariance(self, h: int, w: int, patch_size: int) -> torch.Tensor:
        """``S₁ = Π B Bᵀ Πᵀ`` for one channel, (P², P²) float64 (`eq-whitened`, equivariant ``B``).

        ``B Bᵀ`` is circulant with spectrum ``|m|²``; its entry for offsets ``a, a'`` is the
        autocorrelation ``r(a − a')`` with ``r = F⁻¹|m|²``."""
        r = torch.fft.ifft2(self.spectrum(h, w).abs() ** 2).real
        half = patch_size // 2
        d = torch.arange(-half, half + 1)
        di = (d[:, None] - d[None, :]) % h  # (P, P): row offset differences
        dj = (d[:, None] - d[None, :]) % w
        # S[(a_i, a_j), (b_i, b_j)] = r[a_i - b_i, a_j - b_j]
        s = r[di[:, None, :, None], dj[None, :, None, :]]
        return s.reshape(patch_size**2, patch_size**2)

    def __repr__(self):
        return self.name


def _check_kernel(kernel) -> torch.Tensor:
    kernel = _as_float_tensor(kernel, "kernel")
    if kernel.dim() != 2:
        raise ValueError(f"kernel must be one 2-D tensor (kh, kw), got shape {tuple(kernel.shape)}")
    if (kernel < 0).any():
        raise ValueError("kernel must have non-negative entries")
    if kernel.sum() <= 0:
        raise ValueError("kernel must have a positive sum")
    return kernel


class Blur(FourierMultiplier):
    """Deconvolution: circular convolution ``(Ax)[n] = Σ_j k[j] x[n − j]`` (`eq-forward`).

    ``kernel``: (kh, kw) with kh ≤ H, kw ≤ W, centred at ``(kh//2, kw//2)``; used as given (the
    factories normalise to sum 1). The same kernel blurs every channel."""

    def __init__(self, kernel: torch.Tensor):
        self.kernel = _check_kernel(kernel).double()
        super().__init__(self._kernel_spectrum, f"Blur({tuple(self.kernel.shape)})")

    def _kernel_spectrum(self, h, w):
        kh, kw = self.kernel.shape
        if kh > h or kw > w:
            raise ValueError(f"kernel of size {(kh, kw)} is larger than the images {(h, w)}")
        # place k[kh//2, kw//2] at the origin: pad[(i - kh//2) % h, (j - kw//2) % w] = k[i, j]
        pad = torch.zeros(h, w, dtype=torch.float64)
        pad[:kh, :kw] = self.kernel
        pad = torch.roll(pad, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
        return torch.fft.fft2(pad)


# ----------------------------------------------------------------------------- k-space sampling (MRI)

def check_kspace_mask(mask) -> torch.Tensor:
    """Check a k-space mask: a finite (H, W) tensor of 0/1 entries, not all 0, conjugate-symmetric
    (``M[k] = M[−k mod (H, W)]``, `course/09_mri.md`, `eq-kspace`); returns it as float64."""
    if isinstance(mask, torch.Tensor) and not mask.is_floating_point() and not mask.is_complex():
        mask = mask.double()  # bool / integer masks
    mask = _as_float_tensor(mask, "mask")
    if mask.dim() != 2:
        raise ValueError(f"mask must be one 2-D k-space mask (H, W), got shape {tuple(mask.shape)}")
    if ((mask != 0) & (mask != 1)).any():
        raise ValueError("mask must hold only 0 (not sampled) and 1 (sampled) entries")
    if not (mask == 1).any():
        raise ValueError("mask samples no k-space location (all entries are 0)")
    mirror = torch.roll(torch.flip(mask, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))  # M[−k mod (H, W)]
    if not torch.equal(mask, mirror):
        raise ValueError("mask must be conjugate-symmetric, M[k] = M[-k mod (H, W)] "
                         "(torch.fft.fft2 layout), so that K x stays real")
    return mask.double()


def kspace_acceleration(mask) -> float:
    """The actual acceleration ``R = H·W / Σ_k M[k]`` of a k-space mask (H, W)."""
    mask = check_kspace_mask(mask)
    return mask.numel() / mask.sum().item()


class KSpaceSampling(FourierMultiplier):
    """Cartesian k-space sampling ``K = F^H diag(M) F`` (`course/09_mri.md`, `eq-kspace`).

    ``F`` is the unitary 2-D DFT, ``M`` an (H, W) 0/1 conjugate-symmetric mask in
    ``torch.fft.fft2``'s layout (:func:`check_kspace_mask`). ``K`` is real, symmetric and
    idempotent (an orthogonal projector), so ``A = Aᵀ = A⁺ = K`` and ``B = A⁺`` gives the
    zero-filled reconstruction. Acts on (B, C, H, W) images of the mask's size, channel by channel."""

    def __init__(self, mask: torch.Tensor):
        self.mask = check_kspace_mask(mask)
        h, w = self.mask.shape
        super().__init__(self._mask_spectrum, f"KSpaceSampling({h}x{w}, R={self.acceleration:.2f})")

    @property
    def acceleration(self) -> float:
        """The actual acceleration ``H·W / Σ M`` (after symmetrisation)."""
        return self.mask.numel() / self.mask.sum().item()

    def _mask_spectrum(self, h, w):
        if (h, w) != tuple(self.mask.shape):
            raise ValueError(f"k-space mask of size {tuple(self.mask.shape)} does not match images of size {(h, w)}")
        return self.mask.to(torch.complex128)

    @property
    def T(self):
        return self

    def pinv(self):
        return self


def _centre_columns(w: int, center_fraction: float) -> set:
    """The fully sampled band: the first ``round(f_c·W)`` columns in the order 0, 1, −1, 2, −2, …
    (mod W), closed under ``k ↦ −k mod W``."""
    n_c = round(center_fraction * w)
    order = [0] + [s * k % w for k in range(1, w // 2 + 1) for s in (1, -1)]
    band = set(order[:n_c])
    return band | {(-k) % w for k in band}


def line_mask(h: int, w: int, acceleration: float = 4.0, center_fraction: float = 0.08,
              kind: str = "random", seed: int = 0) -> torch.Tensor:
    """(h, w) Cartesian k-space mask of whole columns (phase-encoding lines), 1 = sampled, in
    ``torch.fft.fft2``'s layout (`course/09_mri.md`, `eq-kspace`).

    A band of ``round(center_fraction·w)`` columns around index 0 (:func:`_centre_columns`), then
    conjugate pairs ``{k, −k mod w}``, ``k = 0 … w//2`` (0 and ``w/2`` their own mirrors), until the kept
    fraction reaches ``1/acceleration``: ``kind="random"`` draws the pairs in the order of
    ``torch.randperm`` under ``seed``; ``"equispaced"`` takes the multiples of
    ``round(acceleration)`` first, then the other pairs by increasing ``k`` (no randomness). The
    actual acceleration (:func:`kspace_acceleration`) differs from ``acceleration`` by rounding."""
    check_positive_int(h, "h"), check_positive_int(w, "w")
    if isinstance(acceleration, bool) or not isinstance(acceleration, (int, float)) \
            or not math.isfinite(acceleration) or acceleration < 1:
        raise ValueError(f"acceleration must be a finite number >= 1, got {acceleration!r}")
    if isinstance(center_fraction, bool) or not isinstance(center_fraction, (int, float)) \
            or not 0 <= center_fraction <= 1:
        raise ValueError(f"center_fraction must be a number in [0, 1], got {center_fraction!r}")
    if kind not in ("random", "equispaced"):
        raise ValueError(f"kind must be 'random' or 'equispaced', got {kind!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    kept = _centre_columns(w, center_fraction)
    pairs = [k for k in range(w // 2 + 1) if k not in kept]
    if kind == "random":
        pairs = [pairs[i] for i in torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))]
    else:
        step = max(1, round(acceleration))
        pairs = sorted(pairs, key=lambda k: (k % step != 0, k))
    target = w / acceleration
    for k in pairs:
        if len(kept) >= target:
            break
        kept |= {k, (-k) % w}
    mask = torch.zeros(h, w)
    mask[:, sorted(kept)] = 1.0
    return mask


# ----------------------------------------------------------------------------- dense fallback

class DenseOperator(Operator):
    """An operator given by an explicit (n, n) matrix for one image shape (C, H, W); used for
    pseudo-inverses of general operators and by the dense LE-MMSE path (small images only)."""

    _kind = "general"

    def __init__(self, M: torch.Tensor, shape):
        self.M = M.double()
        self.shape = tuple(shape)

    @classmethod
    def from_operator(cls, op: Operator, shape) -> DenseOperator:
        return cls(op.matrix(shape), shape)

    def _apply(self, x):
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"this dense operator acts on images of shape {self.shape}, got {tuple(x.shape[1:])}")
        flat = x.reshape(x.shape[0], -1)
        return (flat @ self.M.T.to(device=x.device, dtype=x.dtype)).reshape(x.shape)

    def matrix(self, shape, dtype=torch.float64, device=None):
        if tuple(shape) != self.shape:
            raise ValueError(f"this dense operator acts on images of shape {self.shape}, got {tuple(shape)}")
        return self.M.to(dtype=dtype, device=device)

    @property
    def T(self):
        return DenseOperator(self.M.T, self.shape)

    def pinv(self):
        U, s, Vh = torch.linalg.svd(self.M)
        keep = s > RANK_TOL * s.max()
        inv = (Vh[keep].T / s[keep]) @ U[:, keep].T
        return DenseOperator(inv, self.shape)

    def tikhonov(self, eps):
        eps = _check_eps(eps)
        M = self.M
        return DenseOperator(torch.linalg.solve(M.T @ M + eps * torch.eye(len(M), dtype=M.dtype), M.T), self.shape)


class LinearOperator(Operator):
    """Wrap any linear callable ``fn: (B,C,H,W) -> (B,C,H,W)`` (optionally with its adjoint)."""

    _kind = "general"

    def __init__(self, fn: Callable, adjoint: Callable | None = None, name: str = "operator"):
        self.fn = fn
        self.adjoint = adjoint
        self.name = name

    def _apply(self, x):
        out = self.fn(x)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise ValueError(
                f"{self.name} must map images of shape {tuple(x.shape)} to the same shape, got "
                f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
            )
        return out

    @property
    def T(self):
        if self.adjoint is None:
            raise NotImplementedError("this LinearOperator was built without an adjoint")
        return LinearOperator(self.adjoint, self.fn, f"{self.name}.T")


def as_operator(op, name: str = "A") -> Operator:
    """``None`` → identity; an Operator as is; a tensor (n, n) is refused (use DenseOperator);
    any other callable is wrapped as a LinearOperator."""
    if op is None:
        return Denoising()
    if isinstance(op, Operator):
        return op
    if isinstance(op, torch.Tensor):
        raise TypeError(f"{name} must be an operator; wrap a matrix with DenseOperator(M, shape=(C, H, W))")
    if callable(op):
        return LinearOperator(op, name=name)
    raise TypeError(f"{name} must be None, a lemmse_lite Operator or a linear callable, got {type(op).__name__}")


# ----------------------------------------------------------------------------- measurements

#: The splits a measurement seed tells apart (:func:`measurement_seed`).
SPLITS = ("train", "test")


def measurement_seed(seed: int, split: str, sigma: float) -> int:
    """The package's one seed rule for the noise of simulated measurements: ``seed + 1 + s +
    2·round(σ·10⁶)`` with ``s`` = 0 (train) or 1 (test). The noise of a (split, σ) measurement thus
    depends on nothing else (which networks are compared, which other σ are asked), differs
    between the splits and between noise levels, and differs from the draws seeded by ``seed``
    itself (the data order, the initialisation)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return seed + 1 + SPLITS.index(split) + 2 * round(check_sigma_value(sigma) * 1e6)


def measure(A, x: torch.Tensor, sigma, generator: torch.Generator | int = 0) -> torch.Tensor:
    """The one measurement simulator of the package: ``y = A x + σ e``, ``e ~ N(0, I)``.

    x: (B, C, H, W); sigma: float or (B,) tensor (one level per image); ``A=None`` is the identity.
    ``generator``: a ``torch.Generator`` (the noise is drawn on its device, then moved to
    ``x.device``, so a CPU generator gives the same noise on any device) or an int seed for a
    fresh CPU generator. Returns (B, C, H, W) in ``x``'s dtype."""
    check_images(x)
    if isinstance(generator, bool) or not isinstance(generator, (int, torch.Generator)):
        raise TypeError(f"generator must be a torch.Generator or an int seed, got {type(generator).__name__}")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    sig = check_sigma(sigma, x.shape[0], x.device, x.dtype)
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    ax = x if A is None else A(x)
    return ax + sig[:, None, None, None] * noise.to(x.device)


# ----------------------------------------------------------------------------- masks and kernels

def center_box_mask(h: int, w: int, size: int) -> torch.Tensor:
    """(h, w) mask, 1 = observed, with a missing ``size × size`` square starting at
    ``(h//2 − size//2, w//2 − size//2)`` (`course/00_inverse_problems.md`)."""
    check_positive_int(h, "h"), check_positive_int(w, "w"), check_positive_int(size, "size")
    if size > min(h, w):
        raise ValueError(f"size must be at most min(h, w) = {min(h, w)}, got {size}")
    mask = torch.ones(h, w)
    i0, j0 = h // 2 - size // 2, w // 2 - size // 2
    mask[i0 : i0 + size, j0 : j0 + size] = 0.0
    return mask


def random_mask(h: int, w: int, missing_fraction: float, seed: int = 0) -> torch.Tensor:
    """(h, w) mask, 1 = observed, with exactly ``round(missing_fraction·h·w)`` missing pixels chosen by
    ``torch.randperm`` under ``seed``: the first ``round(f·h·w)`` entries of
    ``torch.randperm(h·w)`` drawn from a CPU ``torch.Generator`` seeded with ``seed`` are the missing
    flat indices ``i·w + j`` (`course/00_inverse_problems.md`)."""
    check_positive_int(h, "h"), check_positive_int(w, "w")
    if not isinstance(missing_fraction, (int, float)) or not 0 <= missing_fraction <= 1:
        raise ValueError(f"missing_fraction must be a number in [0, 1], got {missing_fraction!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    gen = torch.Generator().manual_seed(seed)
    missing = torch.randperm(h * w, generator=gen)[: round(missing_fraction * h * w)]
    mask = torch.ones(h * w)
    mask[missing] = 0.0
    return mask.reshape(h, w)


def eps_mask(mask: torch.Tensor, eps: float) -> torch.Tensor:
    """The ε-mask pre-inverse: ``mask`` with ``ε`` instead of 0 on the holes (invertible)."""
    mask = _check_non_negative(_as_float_tensor(mask, "mask"), "mask")
    eps = _check_eps(eps)
    return torch.where(mask == 0, torch.full_like(mask, eps), mask)


def gaussian_kernel(std: float, size: int | None = None) -> torch.Tensor:
    """(size, size) Gaussian kernel normalised to sum 1; default size ``2·ceil(3·std) + 1``."""
    if not isinstance(std, (int, float)) or not math.isfinite(std) or std <= 0:
        raise ValueError(f"std must be a positive finite number, got {std!r}")
    size = check_positive_int(size if size is not None else 2 * math.ceil(3 * std) + 1, "size")
    d = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(d**2) / (2 * std**2))
    k = g[:, None] * g[None, :]
    return (k / k.sum()).float()


def disk_kernel(radius: float, size: int | None = None) -> torch.Tensor:
    """(size, size) uniform disk ``{‖d‖ ≤ radius}`` normalised to sum 1; default size ``2·floor(radius)+1``."""
    if not isinstance(radius, (int, float)) or not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a non-negative finite number, got {radius!r}")
    size = check_positive_int(size if size is not None else 2 * math.floor(radius) + 1, "size")
    d = torch.arange(size, dtype=torch.float64) - size // 2
    k = ((d[:, None] ** 2 + d[None, :] ** 2) <= radius**2).double()
    if k.sum() == 0:
        raise ValueError(f"disk of radius {radius} is empty in a kernel of size {size}")
    return (k / k.sum()).float()


# ----------------------------------------------------------------------------- pre-inverses

def pre_inverse(A: Operator, spec: str | None):
    """A pre-inverse ``B`` by name: ``None``/``"none"`` (physics-agnostic), ``"adjoint"`` (Aᵀ),
    ``"pinv"`` (A⁺), ``"tikhonov:EPS"`` ((AᵀA + εI)⁻¹Aᵀ), ``"eps-mask:EPS"`` (inpainting only)."""
    if spec is None or spec == "none":
        return None
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string such as 'adjoint' or 'tikhonov:0.01', got {type(spec).__name__}")
    name, _, arg = spec.partition(":")
    if name == "adjoint":
        return A.T
    if name == "pinv":
        return A.pinv()
    if name in ("tikhonov", "eps-mask"):
        try:
            eps = float(arg)
        except ValueError:
            raise ValueError(f"pre-inverse '{spec}' needs a number after ':', e.g. '{name}:0.01'") from None
        if name == "tikhonov":
            return A.tikhonov(eps)
        if not isinstance(A, Diagonal):
            raise ValueError("the eps-mask pre-inverse needs an inpainting operator A")
        return Inpainting(eps_mask(A.b, eps))
    raise ValueError(f"unknown pre-inverse {spec!r}: use none, adjoint, pinv, tikhonov:EPS or eps-mask:EPS")
