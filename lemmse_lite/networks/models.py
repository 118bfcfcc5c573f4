"""Networks with a receptive field of exactly ``P x P`` (``course/06_training.md``, ``eq-receptive-field``).

Three families, all with circular padding, all called as ``model(z, sigma) -> x_hat``:

* :class:`LocalResNet` -- ``(P-1)/2`` stride-1 3x3 convolutions, everything else 1x1. Local and
  equivariant to **every** circular shift, so its population optimum is the LE-MMSE (``course/04_locality.md``, ``eq-lemmse``).
* :class:`LocalUNet` -- a one-level U-Net (stride-2 down/up). Equivariant to shifts by **multiples
  of 2 only**; its receptive field depends on the output pixel's parity but never leaves the
  centred ``P x P`` window. Its optimum is LE-MMSE restricted to ``m = n (mod 2)`` (``course/07_networks_vs_theory.md``, ``eq-sublattice``).
* :class:`PatchMLP` -- unfold the ``C x P x P`` circular patch, shared per-pixel MLP, centre pixel.

``z`` is ``(B, C, H, W)`` (the pre-inverted measurement ``B y``), ``sigma`` a float or a ``(B,)``
tensor, positive and finite (validated by :func:`lemmse_lite.checks.check_sigma`, the estimators'
rule: ``sigma <= 0`` or NaN is a ``ValueError``, never silently clamped); it enters through a small embedding that modulates every block (FiLM: per-channel scale
and shift), so one network serves a range of noise levels. No normalisation layer pools over
space (it would break locality). :func:`receptive_field` *measures* the support of one output
pixel's gradient; :func:`receptive_field_all_parities` does it at every position modulo the
model's ``shift_stride``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_odd, check_positive_int, check_sigma

__all__ = [
    "MODELS",
    "LocalResNet",
    "LocalUNet",
    "PatchMLP",
    "ReceptiveField",
    "count_parameters",
    "make_model",
    "receptive_field",
    "receptive_field_all_parities",
    "unet_plan",
]


# ----------------------------------------------------------------------------- building blocks
def _check_channels(channels):
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")


def _conv(cin, cout, kernel, stride=1):
    """Conv with circular padding ``kernel // 2`` (output pixel centred on its input window)."""
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, padding_mode="circular")


class SigmaEmbedding(nn.Module):
    """sigma -> ``(B, dim)``: Fourier features of ``log sigma`` followed by a 2-layer MLP."""

    def __init__(self, dim, n_frequencies=6):
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(n_frequencies) / 4.0)
        self.mlp = nn.Sequential(
            nn.Linear(2 * n_frequencies + 2, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU()
        )

    def forward(self, sigma):
        u = sigma.log()[:, None]
        a = u * self.freqs
        return self.mlp(torch.cat([u, sigma[:, None], a.sin(), a.cos()], dim=1))


class FiLMBlock(nn.Module):
    """Residual block ``h + W2 act(FiLM(act(W1 h)))``; ``W1`` is ``kernel x kernel``, ``W2`` 1x1.

    FiLM: ``u * (1 + s(emb)) + b(emb)`` per channel (initialised to the identity).
    Receptive field: that of ``W1`` (``kernel``).
    """

    def __init__(self, width, kernel, emb_dim):
        super().__init__()
        self.conv1 = _conv(width, width, kernel)
        self.conv2 = _conv(width, width, 1)
        self.film = nn.Linear(emb_dim, 2 * width)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h, emb):
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        u = F.silu(self.conv1(h)) * (1 + scale) + shift
        return h + self.conv2(F.silu(u))


class _Base(nn.Module):
    """Common pieces: sigma embedding, output head ``x_hat = z + W_out h`` (global skip)."""

    shift_stride = 1  # the model is exactly equivariant to circular shifts by multiples of this

    def _setup(self, patch_size, channels, width, depth, emb_dim):
        _check_channels(channels)
        check_positive_int(width, "width")
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
            raise ValueError(f"depth must be an integer >= 0, got {depth!r}")
        self.patch_size, self.channels, self.width, self.depth = patch_size, channels, width, depth
        self.config = {
            "family": type(self).__name__,
            "patch_size": patch_size,
            "channels": channels,
            "width": width,
            "depth": depth,
            "emb_dim": emb_dim or width,
        }
        emb_dim = emb_dim or width
        self.embed = SigmaEmbedding(emb_dim)
        self.head_film = nn.Linear(emb_dim, 2 * width)  # FiLM after the head (identity at init)
        nn.init.zeros_(self.head_film.weight)
        nn.init.zeros_(self.head_film.bias)
        self.tail = _conv(width, channels, 1)
        # small (not zero) so that gradients -- and measured receptive fields -- exist at init
        with torch.no_grad():
            self.tail.weight.mul_(0.1)
            self.tail.bias.zero_()
        return emb_dim

    def _inputs(self, z, sigma):
        if not torch.is_tensor(z) or z.ndim != 4 or z.shape[1] != self.channels:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"z must be a (B, {self.channels}, H, W) tensor, got {shape}")
        p = self.patch_size
        if min(z.shape[-2:]) < p:
            raise ValueError(f"image {tuple(z.shape[-2:])} is smaller than patch_size {p}")
        return self.embed(check_sigma(sigma, z.shape[0], z.device, z.dtype))

    def _trunk(self, h, emb):
        """FiLM the head features, then run the residual blocks."""
        scale, shift = self.head_film(emb)[:, :, None, None].chunk(2, dim=1)
        h = h * (1 + scale) + shift
        for block in self.blocks:
            h = block(h, emb)
        return h

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.config.items() if k != "family")


# ----------------------------------------------------------------------------- the three families
class LocalResNet(_Base):
    """Residual CNN with receptive field exactly ``P x P`` (``course/06_training.md``, ``eq-receptive-field``).

    Layout: 3x3 head conv, ``(P-1)/2 - 1`` residual blocks with a 3x3 conv, ``depth`` residual
    blocks with 1x1 convs only, 1x1 output conv, global skip ``x_hat = z + ...``. Stride 1 and
    circular padding throughout, so it commutes with **every** circular shift and output pixel
    ``n`` depends exactly on the centred ``P x P`` window of ``z`` around ``n`` (``(P-1)/2``
    stacked 3x3 convs).

    Shapes: ``z`` ``(B, C, H, W)`` with ``H, W >= P``; ``sigma`` float or ``(B,)``;
    output ``(B, C, H, W)``.
    """

    def __init__(self, patch_size=5, channels=1, width=48, depth=2, emb_dim=None):
        super().__init__()
        check_odd(patch_size, "patch_size")
        emb = self._setup(patch_size, channels, width, depth, emb_dim)
        n3 = (patch_size - 1) // 2  # number of 3x3 layers
        self.head = _conv(channels, width, 3 if n3 else 1)
        kernels = [3] * max(n3 - 1, 0) + [1] * depth
        self.blocks = nn.ModuleList(FiLMBlock(width, k, emb) for k in kernels)

    def forward(self, z, sigma):
        emb = self._inputs(z, sigma)
        return z + self.tail(F.silu(self._trunk(self.head(z), emb)))


class PatchMLP(_Base):
    """Per-pixel MLP on the unfolded circular ``C x P x P`` patch -> centre pixel estimate.

    The first layer is a linear map of the flattened patch ``Pi_n z`` (``course/04_locality.md``, ``eq-local``), implemented
    as a ``P x P`` convolution on the circularly padded image (the same arithmetic as
    ``unfold`` + ``Linear``, without the unfolded copy). Then ``depth`` residual 1x1 (per-pixel)
    blocks and a linear read-out, ``x_hat[n] = z[n] + MLP(Pi_n z, sigma)``. Receptive field exactly
    ``P x P`` by construction; equivariant to every circular shift.
    """

    def __init__(self, patch_size=5, channels=1, width=128, depth=2, emb_dim=None):
        super().__init__()
        check_odd(patch_size, "patch_size")
        emb = self._setup(patch_size, channels, width, depth, emb_dim)
        self.head = _conv(channels, width, patch_size)
        self.blocks = nn.ModuleList(FiLMBlock(width, 1, emb) for _ in range(depth))

    def forward(self, z, sigma):
        emb = self._inputs(z, sigma)
        return z + self.tail(F.silu(self._trunk(self.head(z), emb)))


def unet_plan(patch_size):
    """How :class:`LocalUNet` spends the radius ``r = (P-1)/2`` (returns a dict).

    ``down`` is the half-width ``a`` of the stride-2 down-conv (kernel ``2a+1``), ``coarse`` the
    number ``k`` of 3x3 convs at half resolution, ``encoder`` the number ``e`` of full-resolution
    3x3 convs before the split. The up-sampling is a stride-2 transposed 3x3 conv (zero insertion +
    3x3 conv). The coarse path then reaches ``e + 2k + a + 1 = r`` pixels at odd positions and
    ``r - 1`` at even ones (per axis, symmetric); the full-resolution skip reaches ``e <= r``.
    """
    check_odd(patch_size, "patch_size", minimum=3)
    r = (patch_size - 1) // 2
    down = 1 if r >= 2 else 0
    rest = r - 1 - down
    coarse = rest // 2
    return {"radius": r, "down": down, "coarse": coarse, "encoder": rest - 2 * coarse}


class LocalUNet(_Base):
    """One-level U-Net whose output never depends on pixels outside the centred ``P x P`` window.

    Layout (see :func:`unet_plan`): ``e`` full-res 3x3 convs (the skip features) -> stride-2 conv
    with kernel ``2a+1`` -> ``k`` 3x3 residual blocks and a 1x1 block at half resolution ->
    transposed 3x3 stride-2 conv (zero insertion + 3x3 conv) -> concatenate with the skip -> 1x1
    merge, ``depth`` 1x1 blocks, 1x1 output, global skip. ``P >= 3``.

    Receptive field (measured in the tests at every parity): per axis, radius ``r = (P-1)/2`` at
    odd coordinates and ``r - 1`` at even ones, always symmetric. So the field is the full centred
    ``P x P`` window at (odd, odd) positions, ``P x (P-2)``/``(P-2) x P`` at mixed parity and
    ``(P-2) x (P-2)`` at (even, even) positions -- never outside the centred window.
    ``P = 3`` is the exception: there is no room for a 3x3 down-conv, so the coarse path is plain
    subsampling and the field at (odd, odd) positions is the pixel and its 4 diagonal neighbours
    (bounding box 3x3, not the full window), a 1x3 / 3x1 segment at mixed parity and the pixel
    alone at (even, even); the union over parities is the 3x3 window.

    Equivariance: exact only for circular shifts by **multiples of 2** (``shift_stride = 2``); an
    odd shift changes which pixels are on the coarse grid. Its optimum is therefore the LE-MMSE
    restricted to ``m = n (mod 2)`` with a parity-dependent window (``course/07_networks_vs_theory.md``, ``eq-sublattice``), so it is expected to
    agree less with the plain LE-MMSE than the stride-1 families do.

    Shapes: ``z`` ``(B, C, H, W)`` with ``H, W`` even and ``>= P``; ``sigma`` float or ``(B,)``;
    output ``(B, C, H, W)``.
    """

    shift_stride = 2

    def __init__(self, patch_size=5, channels=1, width=32, depth=2, emb_dim=None):
        super().__init__()
        plan = unet_plan(patch_size)
        emb = self._setup(patch_size, channels, width, depth, emb_dim)
        self.plan = plan
        wide = 2 * width
        self.head = _conv(channels, width, 3 if plan["encoder"] else 1)
        self.down = _conv(width, wide, 2 * plan["down"] + 1, stride=2)
        kernels = [3] * plan["coarse"] + [1]
        self.coarse = nn.ModuleList(FiLMBlock(wide, k, emb) for k in kernels)
        self.up = _conv(wide, width, 3)  # applied after zero insertion = transposed stride-2 conv
        self.merge = _conv(2 * width, width, 1)
        self.blocks = nn.ModuleList(FiLMBlock(width, 1, emb) for _ in range(depth))

    @staticmethod
    def _zero_insert(h):
        """``(B, C, h, w) -> (B, C, 2h, 2w)`` with the input at even positions, zeros elsewhere."""
        out = h.new_zeros(*h.shape[:2], 2 * h.shape[2], 2 * h.shape[3])
        out[:, :, ::2, ::2] = h
        return out

    def forward(self, z, sigma):
        emb = self._inputs(z, sigma)
        if z.shape[-2] % 2 or z.shape[-1] % 2:
            raise ValueError(f"LocalUNet needs even H and W, got {tuple(z.shape[-2:])}")
        skip = F.silu(self.head(z))
        c = F.silu(self.down(skip))
        for block in self.coarse:
            c = block(c, emb)
        u = F.silu(self.up(self._zero_insert(c)))
        h = self.merge(torch.cat([skip, u], dim=1))
        return z + self.tail(F.silu(self._trunk(h, emb)))


MODELS = {"resnet": LocalResNet, "unet": LocalUNet, "patchmlp": PatchMLP}


def make_model(family, **kwargs):
    """Build a model by name (``"resnet"``, ``"unet"``, ``"patchmlp"`` or the class name)."""
    by_class = {cls.__name__: cls for cls in MODELS.values()}
    cls = MODELS.get(str(family).lower()) or by_class.get(family)
    if cls is None:
        raise ValueError(f"family must be one of {sorted(MODELS)}, got {family!r}")
    return cls(**kwargs)


# ----------------------------------------------------------------------------- measured fields
@dataclass
class ReceptiveField:
    """Measured dependence of one output pixel on the input.

    ``support``: ``(H, W)`` bool, True where the gradient of output pixel ``position`` (summed
    over output channels, any input channel) is non-zero, **rolled so that ``position`` sits at
    ``(H//2, W//2)``**. ``top/bottom/left/right``: extent of the support's bounding box around
    the pixel (0 = the pixel itself).
    """

    support: torch.Tensor
    position: tuple
    top: int
    bottom: int
    left: int
    right: int

    @property
    def size(self):
        """Bounding-box ``(height, width)``."""
        return (self.top + self.bottom + 1, self.left + self.right + 1)

    def within(self, patch_size):
        """True when the support lies inside the centred ``patch_size`` window."""
        r = patch_size // 2
        return max(self.top, self.bottom, self.left, self.right) <= r

    def is_full_window(self, patch_size):
        """True when the support is exactly the centred ``patch_size x patch_size`` window."""
        H, W = self.support.shape
        r = patch_size // 2
        window = torch.zeros_like(self.support)
        window[H // 2 - r : H // 2 + r + 1, W // 2 - r : W // 2 + r + 1] = True
        return bool(torch.equal(window, self.support))


def _parse_shape(model, image_shape):
    if len(image_shape) == 2:
        image_shape = (getattr(model, "channels", 1), *image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W) or (H, W), got {image_shape!r}")
    return tuple(int(s) for s in image_shape)


def receptive_field(model, image_shape, position=None, sigma=0.1, n_probes=2, seed=0):
    """Measure the receptive field of output pixel ``position`` (default: the centre).

    Computes ``d/dz sum_c model(z, sigma)[0, c, i, j]`` in float64 on a copy of the model for
    ``n_probes`` random inputs ``z`` and returns the union of the non-zero supports as a
    :class:`ReceptiveField`. Choose ``H, W`` larger than the field (e.g. ``2P + 2``) so that the
    circular wrap cannot hide part of it.
    """
    C, H, W = _parse_shape(model, image_shape)
    i, j = position if position is not None else (H // 2, W // 2)
    probe = _float64_copy(model)
    gen = torch.Generator().manual_seed(seed)
    support = torch.zeros(H, W, dtype=torch.bool)
    for _ in range(n_probes):
        z = torch.rand(1, C, H, W, generator=gen, dtype=torch.float64).requires_grad_(True)
        out = probe(z, sigma)[0, :, i, j].sum()
        (grad,) = torch.autograd.grad(out, z)
        support |= grad[0].abs().sum(0) != 0
    support = torch.roll(support, (H // 2 - i, W // 2 - j), dims=(0, 1))
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    return ReceptiveField(
        support=support,
        position=(i, j),
        top=H // 2 - int(rows.min()),
        bottom=int(rows.max()) - H // 2,
        left=W // 2 - int(cols.min()),
        right=int(cols.max()) - W // 2,
    )


def receptive_field_all_parities(model, image_shape, stride=None, **kwargs):
    """:func:`receptive_field` at one position of each class modulo ``stride`` (default
    ``model.shift_stride``): returns ``{(i % s, j % s): ReceptiveField}`` (``s*s`` entries)."""
    C, H, W = _parse_shape(model, image_shape)
    s = stride or getattr(model, "shift_stride", 1)
    i0, j0 = (H // 2) - (H // 2) % s, (W // 2) - (W // 2) % s
    return {
        (a, b): receptive_field(model, (C, H, W), position=(i0 + a, j0 + b), **kwargs)
        for a in range(s)
        for b in range(s)
    }


def _float64_copy(model):
    probe = copy.deepcopy(model).to(torch.float64).eval()
    for p in probe.parameters():
        p.requires_grad_(False)
    return probe


def count_parameters(model):
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
