"""LE-MMSE on a training set sharded over processes with ``torch.distributed`` (gloo on CPU,
NCCL on GPUs): how to run the estimator on a training set larger than one device holds.

Every rank holds the same measurements ``y`` and streams its own shard of the training set
through :func:`lemmse_lite.estimators.le_mmse` (memory set by the engine's blocks, never by N).
The estimate is a softmax average (`course/05_closed_form.md`, `eq-attention`), so a shard's
result is summed up by its per-query online-softmax state: the running maximum ``m_r``, the
denominator ``d_r = Σ_k exp(s_k − m_r)`` and the numerator ``Σ_k exp(s_k − m_r) v_k``. A shard's
log-normaliser ``ℓ_r = m_r + log d_r`` is read from its log-density (`course/08_generalisation.md`,
`eq-log-density`: ``ℓ_r = log_density_r + log(N_r L)``, L the locations per query, equal on all
ranks), every rank's ``(x̂_r, ℓ_r)`` is gathered (all_gather) and folded into one float64
:class:`~lemmse_lite.estimators.engine.SoftmaxState` by its ``merge``, the online-softmax merge of
the engine itself::

    m = max_r ℓ_r,   d = Σ_r exp(ℓ_r − m),   num = Σ_r exp(ℓ_r − m) x̂_r,
    x̂ = num / d,    log_density = m + log d − log(N L),

which is the single-process result up to float32 rounding. The source map (the
training image and location of the largest weight, `eq-log-density`'s diagnostics) is the
arg-max across ranks of each shard's largest unnormalised log-weight (ties: the lowest rank,
i.e. the lowest image index, as in one process); image ids are offset by the shard's start.
``N_eff`` (`eq-n-eff`) needs the global normaliser in a second pass and is not sharded here.

Run with ``torchrun`` (one process per GPU, or several on CPU with gloo)::

    torchrun --standalone --nproc_per_node=2 -m lemmse_lite.estimators.distributed \\
        --dataset photos --n-train 2000 --n-test 4 --sigma 0.2 --patch-size 5 --out sharded.pt

Each rank streams only its contiguous slice of the training images (:func:`shard_range`,
:func:`shard_stream`: one batch of its shard in memory at a time); rank 0
prints the PSNR and saves ``x_hat``, ``y``, ``x`` and the source map to ``--out``. In your own
script: ``dist.init_process_group(...)``, then on every rank
``le_mmse(y, my_shard, sigma, P, A=A, B=B)`` -- rank ``dst`` gets the estimate, the others None.
"""

from __future__ import annotations

import argparse
import math
import resource
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .. import data, estimators, operators, store
from ..checks import check_odd, check_positive_int, check_sigma
from ..problems import PROBLEMS, problem_operators
from ..profiles import get_profile
from . import metrics
from .engine import SoftmaxState

__all__ = ["ShardedDiagnostics", "le_mmse", "main", "shard_range", "shard_stream"]

# Training images read at a time by a rank (:func:`shard_stream`). The estimate's working memory
# scales with it (patches of every location of the batch): about 100 MiB at 256 images and 15 at
# 64 (P = 5, 32 × 32), for the same CPU time and bit-identical results.
SHARD_BATCH = 64


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous images ``[start, stop)`` of ``rank`` among ``world`` ranks for N = ``n``
    images: sizes differ by at most one, earlier ranks take the larger ones."""
    check_positive_int(n, "n")
    check_positive_int(world, "world")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
        raise ValueError(f"rank must be an int in [0, {world}), got {rank!r}")
    if world > n:
        raise ValueError(f"cannot shard n={n} training images over world={world} ranks (each needs one)")
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


@dataclass
class ShardedDiagnostics:
    """Diagnostics of the merged estimate, maps (B, H, W): ``log_density`` (nats, `eq-log-density`),
    ``source_image`` (global training index) and ``source_location`` (flat pixel) of the largest
    weight; ``n_train`` = N over all ranks."""

    log_density: torch.Tensor
    source_image: torch.Tensor
    source_location: torch.Tensor
    n_train: int


def _shard_offsets(n_local: int, device, group) -> tuple[int, int]:
    """(start of this rank's shard in the global image order, N over all ranks)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([n_local], dtype=torch.long, device=device), group=group)
    sizes = [int(s) for s in sizes]
    return sum(sizes[:rank]), sum(sizes)


def _source_map(diag, log_mass, offset: int, group):
    """Arg-max across ranks of the largest unnormalised log-weight ``log w_top + log_mass`` per query;
    returns the global (image, location) maps, (B, H, W) long, on every rank."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    best = torch.log(diag.top_weights[..., 0].double()) + log_mass
    top = best.clone()
    dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
    winner = torch.where(best == top, torch.full_like(diag.source_image, rank), torch.full_like(diag.source_image, world))
    dist.all_reduce(winner, op=dist.ReduceOp.MIN, group=group)
    mine = winner == rank
    image = torch.where(mine, diag.source_image + offset, torch.zeros_like(diag.source_image))
    location = torch.where(mine, diag.source_location, torch.zeros_like(diag.source_location))
    dist.all_reduce(image, group=group)
    dist.all_reduce(location, group=group)
    return image, location


def le_mmse(y, shard, sigma, patch_size, A=None, B=None, *, return_diagnostics=False, dst: int = 0,
            group=None, **kwargs):
    """:func:`lemmse_lite.estimators.le_mmse` over the union of every rank's ``shard``.

    Call on every rank of ``group`` (default: the world) with the same ``y`` (B, C, H, W), ``sigma``,
    ``patch_size``, ``A``, ``B`` and keyword arguments (``chunk_size``, ``stride``, ``supports``,
    ``engine``), and this rank's non-empty ``shard`` of the training set ((N_r, C, H, W) tensor or
    iterable; the global image order is rank 0's images, then rank 1's, ...). The per-query
    online-softmax states are merged as in the module docstring. Returns on rank ``dst`` the
    (B, C, H, W) estimate in ``y``'s dtype, with ``return_diagnostics`` also a
    :class:`ShardedDiagnostics`; ``None`` on the other ranks."""
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("le_mmse (distributed) needs torch.distributed initialised: call "
                         "dist.init_process_group(...) first (or run under torchrun)")
    if not isinstance(return_diagnostics, bool):
        raise TypeError(f"return_diagnostics must be a bool, got {type(return_diagnostics).__name__}")
    world = dist.get_world_size(group)
    if isinstance(dst, bool) or not isinstance(dst, int) or not 0 <= dst < world:
        raise ValueError(f"dst must be a rank in [0, {world}), got {dst!r}")
    out, diag = estimators.le_mmse(y, shard, sigma, patch_size, A=A, B=B, return_diagnostics=True, top_k=1, **kwargs)
    offset, n_total = _shard_offsets(diag.n_train, out.device, group)
    # log Σ_k p_k of this shard, up to the common log L: log_density_r + log N_r (eq-log-density)
    log_mass = diag.log_density.double() + math.log(diag.n_train)
    if return_diagnostics:
        image, location = _source_map(diag, log_mass, offset, group)
    state = _merged_state(out, log_mass, group)
    if dist.get_rank(group) != dst:
        return None
    bsz, c, h, w = out.shape
    estimate = state.result().reshape(bsz, h, w, c).permute(0, 3, 1, 2).to(out.dtype)
    if not return_diagnostics:
        return estimate
    log_density = (state.log_normaliser() - math.log(n_total)).reshape(bsz, h, w).to(diag.log_density.dtype)
    return estimate, ShardedDiagnostics(log_density, image, location, n_total)


def _merged_state(out: torch.Tensor, log_mass: torch.Tensor, group) -> SoftmaxState:
    """Every rank's finished softmax — estimate ``out`` (B, C, H, W) and log-normaliser
    ``log_mass`` (B, H, W) — gathered and merged in rank order into one float64
    :class:`~lemmse_lite.estimators.engine.SoftmaxState` of Q = B·H·W queries (the engine's one merge)."""
    c = out.shape[1]
    mine = torch.cat([log_mass.reshape(-1, 1), out.double().permute(0, 2, 3, 1).reshape(-1, c)], dim=1)
    parts = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, mine, group=group)
    state = SoftmaxState(len(mine), c, mine.device, torch.float64)
    every = slice(0, len(mine))
    for part in parts:
        state.merge(every, part[:, 1:], part[:, 0])
    return state


def shard_stream(name: str, n_train: int, rank: int, world: int, batch_size: int = SHARD_BATCH, **kwargs):
    """Rank ``rank``'s shard of the first ``n_train`` images of ``data.stream(name, "train",
    **kwargs)`` (:func:`shard_range`), as a re-iterable :class:`lemmse_lite.data.ImageStream` of
    ``batch_size`` images: only the shard's images are ever read, one batch in memory at a time."""
    start, stop = shard_range(n_train, rank, world)
    # the shard is the stream's order restricted to [start, stop): the same images as load()[start:stop]
    return data.stream(name, "train", batch_size, n=n_train, **kwargs).shard(start, stop)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- torchrun entry point

def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m lemmse_lite.estimators.distributed",
                                description="LE-MMSE with the training set sharded over the ranks of torchrun.")
    p.add_argument("--dataset", default="photos", help="data.load name (each rank keeps its shard)")
    p.add_argument("--n-train", type=int, default=400, help="training images N over all ranks")
    p.add_argument("--n-test", type=int, default=2, help="held-out images measured")
    p.add_argument("--image-size", type=int, default=None, help="side H = W (default: the set's own)")
    p.add_argument("--problem", choices=PROBLEMS, default="denoising", help="forward model")
    p.add_argument("--sigma", type=float, default=0.2, help="noise level sigma > 0")
    p.add_argument("--patch-size", type=int, default=5, help="odd patch size P")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order and the noise")
    p.add_argument("--backend", choices=["gloo", "nccl"], default=None, help="default: nccl with CUDA, else gloo")
    p.add_argument("--out", default=None, help="rank 0 saves x_hat, y, x and the source map here (.pt)")
    args = p.parse_args(argv)
    for flag in ("n_train", "n_test"):
        check_positive_int(getattr(args, flag), "--" + flag.replace("_", "-"))
    check_odd(args.patch_size, "--patch-size")
    try:
        check_sigma(args.sigma, 1, "cpu", torch.float64)
    except (TypeError, ValueError) as err:
        p.error(f"--sigma: {err}")
    return args


def main(argv=None) -> int:
    """``torchrun ... -m lemmse_lite.estimators.distributed``: every rank loads its shard and the same test
    measurements; rank 0 prints the PSNR and saves the result."""
    args = _parse(argv)
    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if backend == "nccl" else "cpu")
        kw = {"seed": args.seed, "size": args.image_size, "grey": True}
        shard = shard_stream(args.dataset, args.n_train, rank, world, **kw)
        x = data.load(args.dataset, "test", n=args.n_test, **kw).to(device)
        # the problem registry's operators, at this data's size and seed (MRI: the profile's settings)
        A, B = problem_operators(args.problem, None, get_profile().replace(image_size=x.shape[-1], seed=args.seed))
        y = operators.measure(A, x, args.sigma, operators.measurement_seed(args.seed, "test", args.sigma))
        got = le_mmse(y, shard, args.sigma, args.patch_size, A=A, B=B, return_diagnostics=True)
        rss = torch.tensor([peak_rss_mib()])
        peaks = [torch.zeros(1) for _ in range(world)]
        dist.all_gather(peaks, rss)
        if got is not None:
            x_hat, diag = got
            print(f"LE-MMSE over {world} ranks ({backend}), N = {diag.n_train}: PSNR "
                  f"{metrics.psnr(x_hat, x).mean().item():.2f} dB on {len(x)} images; peak RSS per rank "
                  + ", ".join(f"{float(p):.0f}" for p in peaks) + " MiB")
            if args.out:
                store.save(args.out, {"x_hat": x_hat.cpu(), "y": y.cpu(), "x": x.cpu(), "world": world,
                                      "log_density": diag.log_density.cpu(), "source_image": diag.source_image.cpu(),
                                      "source_location": diag.source_location.cpu()})
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
