"""Training a network for an inverse problem (``course/06_training.md``, ``eq-training-loss``),
with resumable atomic checkpoints and the run-folder format of ``lemmse train``.

One step (:func:`train_step`): ``x ~ D`` (uniform minibatch of the training set, drawn by
:func:`sample_batch`), ``sigma ~ U[sigma_min, sigma_max]`` per example, ``y = A x + sigma e``
(:func:`lemmse_lite.operators.measure`), ``z = B y``, loss ``mean (N_w(z, sigma) - x)^2``. Its
population optimum over a local equivariant class is the LE-MMSE (``course/04_locality.md``,
``eq-lemmse``).

The pieces: :class:`TrainConfig` (frozen hyper-parameters), :class:`TrainState` (model, EMA
model, optimiser, scheduler, generator, history, accumulators; ``state_dict`` /
``load_state_dict`` are the checkpoint), :func:`train_step`, and :func:`train`, which runs the
loop with checkpoints. Optimiser: AdamW, linear warm-up then cosine decay, gradient clipping, an
exponential moving average (EMA) of the weights -- the EMA weights are what ``train`` leaves in
the model. bfloat16 autocast is used on CUDA only; ``torch.compile`` on any device when asked.

Crops (``TrainConfig.crop``): a local network of receptive field ``P`` needs no whole image to
learn from. With ``crop = c`` each measured example is cut to a ``c x c`` window at a uniform random
offset (wrapping around, as the circular patches of the estimators do), the network runs on the
crop, and the loss is taken on the ``(c - P + 1)^2`` inner pixels only: their receptive fields
never wrap inside the crop, so their outputs are exactly those the network would give on the whole
image. The loss is therefore an unbiased estimate of ``eq-training-loss`` over a uniform random
subset of pixels, and one step can draw many more images, noise levels and noise patterns for the
same arithmetic.

Reproducibility: every random draw (minibatch, sigma, noise) comes from one ``torch.Generator``
on the training device whose state is checkpointed with the rest of the state, so a run that is
killed and resumed gives the same history and weights as an uninterrupted one (same device).
Checkpoints are written atomically (:func:`lemmse_lite.store.save`: temporary file, fsync, replace); a
corrupt or mismatched checkpoint raises :class:`CheckpointError` and is never overwritten.

Run folder (:func:`save_run` / :func:`load_run`): ``model.pt`` (``{"meta", "state_dict"}``, the
EMA weights and the model's config), ``history.json`` (``{"meta", "history"}``) and
``checkpoint.pt`` (the resumable :class:`TrainState`, see :func:`checkpoint_path`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import store
from ..checks import check_positive_int, check_sigma_range
from ..files import atomic_write
from ..operators import measure
from .models import make_model

__all__ = [
    "CheckpointError",
    "TrainConfig",
    "TrainHistory",
    "TrainState",
    "checkpoint_path",
    "fingerprint",
    "load_checkpoint",
    "load_run",
    "random_crops",
    "sample_batch",
    "save_checkpoint",
    "save_run",
    "train",
    "train_step",
]

CHECKPOINT_FORMAT = "lemmse_lite.training/1"
RUN_MODEL, RUN_HISTORY, RUN_CHECKPOINT = "model.pt", "history.json", "checkpoint.pt"
SIGMA_LAWS = ("uniform", "log-uniform")  # law of sigma over sigma_range (log-uniform: diffusion, course/10)
SIGMA_BINS = 8  # equal-width bins of sigma for the per-noise-level loss of the history


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: unreadable, not ours, or written for a different run."""


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (frozen; ``dataclasses.replace`` to change one).

    ``sigma_range``: ``(sigma_min, sigma_max)`` with ``0 < min <= max`` (or one float); sigma is
    drawn per example, uniform (``sigma_law="uniform"``) or log-uniform (``"log-uniform"``, the
    diffusion networks of ``course/10_diffusion.md``). ``steps``, ``batch_size`` (drawn with replacement), ``lr``: peak
    learning rate of AdamW (``weight_decay``), reached after ``warmup`` steps (``None``:
    ``min(100, steps // 20)``) and decayed with a cosine to 0 at ``steps``. ``ema``: EMA decay
    of the weights (``0``/``None``: no averaging). ``clip``: max global gradient norm (``None``:
    no clipping). ``amp``: bfloat16 autocast of the forward pass (``None``: on CUDA only; on a CPU
    with native bfloat16 -- AVX512-BF16 or AMX -- it measured 2.2x per step for the course's
    ResNet; elsewhere it is emulated and slow). ``compile``:
    ``torch.compile`` the forward pass (any device; ~1.6x per step on 2 CPU cores for the course's
    ResNet, after ~20 s of compilation). ``crop``: side ``c`` of the training crops (``None``:
    whole images; see the module docstring), at least the patch size + 2 and at most the image side. ``seed``: the one
    generator behind every random draw. ``log_every``: history interval (``None``:
    ``max(1, steps // 100)``). ``checkpoint_every``: steps between checkpoints. ``device``:
    ``None`` = ``"cuda"`` if available, else ``"cpu"``.
    """

    sigma_range: tuple = (0.05, 0.3)
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int | None = None
    ema: float | None = 0.999
    clip: float | None = 1.0
    amp: bool | None = None
    compile: bool = False
    seed: int = 0
    log_every: int | None = None
    checkpoint_every: int = 500
    device: str | None = None
    sigma_law: str = "uniform"
    crop: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "sigma_range", check_sigma_range(self.sigma_range, "sigma_range"))
        if self.sigma_law not in SIGMA_LAWS:
            raise ValueError(f"sigma_law must be one of {', '.join(SIGMA_LAWS)}, got {self.sigma_law!r}")
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.checkpoint_every, "checkpoint_every")
        check_positive_int(self.log_every, "log_every", allow_none=True)
        check_positive_int(self.crop, "crop", allow_none=True)
        for name in ("lr", "weight_decay", "ema", "clip"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)
                                      or value < 0 or (name == "lr" and value == 0)):
                raise ValueError(f"{name} must be a finite number >= 0 (lr > 0), got {value!r}")
        if self.ema is not None and self.ema >= 1:
            raise ValueError(f"ema must be in [0, 1), got {self.ema!r}")
        if self.warmup is not None and (not isinstance(self.warmup, int) or self.warmup < 0):
            raise ValueError(f"warmup must be an int >= 0, got {self.warmup!r}")

    def resolved(self) -> TrainConfig:
        """A copy with the ``None`` defaults (warmup, log_every, ema, amp, device) filled in."""
        device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        cuda = device.type == "cuda"
        amp = cuda if self.amp is None else bool(self.amp)
        return dataclasses.replace(
            self,
            warmup=min(100, self.steps // 20) if self.warmup is None else self.warmup,
            log_every=max(1, self.steps // 100) if self.log_every is None else self.log_every,
            ema=float(self.ema or 0.0),
            amp=amp,
            device=str(device),
        )

    def hyper(self) -> dict:
        """The fields a resumed run must share with its checkpoint (part of the fingerprint)."""
        keys = ("steps", "batch_size", "lr", "weight_decay", "warmup", "ema", "clip", "amp", "seed",
                "log_every")
        extra = {} if self.sigma_law == "uniform" else {"sigma_law": self.sigma_law}  # old runs keep their keys
        if self.crop is not None:
            extra["crop"] = self.crop
        return {"sigma_range": list(self.sigma_range), **extra, **{k: getattr(self, k) for k in keys}}


def _make_config(config, positional, overrides) -> TrainConfig:
    """``config`` (default ``TrainConfig()``) with the positional arguments of :func:`train` that
    were given and the keyword ``overrides`` applied; unknown names are a ``TypeError``."""
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"train() got unknown argument(s) {', '.join(unknown)}; "
                        f"valid names: {', '.join(sorted(names))}")
    changes = {k: v for k, v in positional.items() if v is not None}
    return dataclasses.replace(config or TrainConfig(), **changes, **overrides)


@dataclass
class TrainHistory:
    """What :func:`train` logged, one entry per logged step.

    ``step``: 1-based step numbers; ``loss``: mean training loss over the steps since the previous
    entry; ``lr``: learning rate of the logged step; ``time``: mean wall-clock seconds per step over
    the same window. ``steps``: planned total, ``completed``: steps done so far. ``model``: the
    trained model holding the EMA weights (not saved in checkpoints).

    ``sigma_edges``: the :data:`SIGMA_BINS` + 1 edges of equal-width bins of sigma over
    ``sigma_range``; ``loss_by_sigma``: per logged window, the mean unweighted loss
    ``mean (N(z, sigma) - x)^2`` of the examples whose sigma fell in each bin (``None`` for an
    empty bin) -- the risk per noise level that ``course/06_training.md`` compares with the
    LE-MMSE's.
    """

    step: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    time: list = field(default_factory=list)
    steps: int = 0
    completed: int = 0
    total_time: float = 0.0
    fingerprint: dict = field(default_factory=dict)
    sigma_edges: list = field(default_factory=list)
    loss_by_sigma: list = field(default_factory=list)
    model: object = field(default=None, repr=False, compare=False)

    def as_dict(self):
        """Plain dict (JSON-serialisable), without the model."""
        d = asdict(self)
        d.pop("model")
        return d


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, state):
    """Atomically write ``state`` with ``torch.save`` (:func:`lemmse_lite.store.save`: the
    package's one atomic writer). A crash leaves either the old file or the new one, never a torn one."""
    store.save(path, state)


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint written by :func:`train`; :class:`CheckpointError` if it is unreadable
    or not a ``lemmse_lite`` training checkpoint."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, corrupt, not a torch file, ...
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}: {_first_line(exc)}); it was "
            "left untouched. "
            "Delete it or pass another path to start afresh."
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a lemmse_lite training checkpoint (expected format "
            f"{CHECKPOINT_FORMAT!r}); it was left untouched"
        )
    return state


def _first_line(exc):
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def _fingerprint_mismatch(saved, now):
    keys = sorted(set(saved) | set(now))
    return [
        f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}"
        for k in keys
        if saved.get(k) != now.get(k)
    ]


# ----------------------------------------------------------------------------- fingerprint
def _operator_signature(op, shape):
    """Name and a behavioural checksum: the operator applied to a fixed pseudo-random probe."""
    if op is None:
        return "identity (None)"
    gen = torch.Generator().manual_seed(1234)
    probe = torch.rand(1, *shape, generator=gen, dtype=torch.float64)
    weights = torch.rand(1, *shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        out = op(probe).double().cpu()
    return f"{type(op).__name__}: {float(out.sum()):.6e} {float((out * weights).sum()):.6e}"


def _model_signature(model):
    config = getattr(model, "config", None) or {"family": type(model).__name__}
    shapes = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return {**config, "parameters": hashlib.sha256(shapes.encode()).hexdigest()[:16]}


def fingerprint(model, images, A, B, config: TrainConfig) -> dict:
    """What identifies a run (architecture, data, operators, ``config.hyper()``): a resumed run
    must match its checkpoint's. ``config`` must be :meth:`TrainConfig.resolved`."""
    fp = {
        "model": _model_signature(model),
        "data": store.tensor_digest(images),
        "A": _operator_signature(A, images.shape[1:]),
        "B": _operator_signature(B, images.shape[1:]),
        **config.hyper(),
    }
    return json.loads(json.dumps(fp))  # tuples -> lists, as they come back from a checkpoint


# ----------------------------------------------------------------------------- state
def _lr_lambda(steps, warmup):
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""

    def f(s):
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, steps - warmup))))

    return f


@dataclass
class TrainState:
    """Everything a run changes: ``model``, ``ema_model``, ``optimizer``, ``scheduler``,
    ``generator`` (every random draw), ``history`` and the accumulators of the current logging
    window (``loss_sum`` (0-d float64 tensor), ``n_steps``, ``seconds``). ``forward`` is the
    (possibly compiled) model call; it is not part of the state dict."""

    model: torch.nn.Module
    ema_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    generator: torch.Generator
    history: TrainHistory
    loss_sum: torch.Tensor
    bin_sum: torch.Tensor = None
    bin_count: torch.Tensor = None
    n_steps: int = 0
    seconds: float = 0.0
    forward: object = field(default=None, repr=False)

    @classmethod
    def create(cls, model, config: TrainConfig, fingerprint_: dict | None = None) -> TrainState:
        """Fresh state for ``model`` (moved to ``config.device`` in place); ``config`` resolved."""
        device = torch.device(config.device)
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        return cls(
            model=model,
            ema_model=copy.deepcopy(model).requires_grad_(False),
            optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config.steps, config.warmup)),
            generator=torch.Generator(device=device).manual_seed(config.seed),
            history=TrainHistory(steps=config.steps, fingerprint=fingerprint_ or {}, model=model,
                                 sigma_edges=torch.linspace(*config.sigma_range, SIGMA_BINS + 1).tolist()),
            loss_sum=torch.zeros((), dtype=torch.float64, device=device),
            bin_sum=torch.zeros(SIGMA_BINS, dtype=torch.float64, device=device),
            bin_count=torch.zeros(SIGMA_BINS, dtype=torch.float64, device=device),
            forward=torch.compile(model) if config.compile else model,
        )

    def state_dict(self) -> dict:
        """The checkpoint content (format tag, weights, optimiser, RNG states, history)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "ema": self.ema_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history.as_dict(),
            "accumulator": {"loss": self.loss_sum.detach().cpu(), "n": self.n_steps, "time": self.seconds,
                            "bin_sum": self.bin_sum.cpu(), "bin_count": self.bin_count.cpu()},
            "fingerprint": self.history.fingerprint,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`; ``KeyError``/``RuntimeError``/... if inconsistent.

        The optimiser state is deep-copied: ``Optimizer.load_state_dict`` would otherwise keep
        the very tensors of an in-memory ``state`` (same device and dtype), and two states would
        then update the same moment buffers."""
        self.model.load_state_dict(state["model"])
        self.ema_model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        for k in ("step", "loss", "lr", "time", "completed", "total_time", "sigma_edges", "loss_by_sigma"):
            setattr(self.history, k, state["history"].get(k, []))
        self.loss_sum.copy_(state["accumulator"]["loss"])
        for k in ("bin_sum", "bin_count"):
            if k in state["accumulator"]:
                getattr(self, k).copy_(state["accumulator"][k])
        self.n_steps, self.seconds = state["accumulator"]["n"], state["accumulator"]["time"]


# ----------------------------------------------------------------------------- one step
@torch.no_grad()
def _ema_update(ema_model, model, decay, step):
    d = min(decay, (1 + step) / (10 + step))  # short-run friendly warm-up of the EMA
    for pe, p in zip(ema_model.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1 - d)
    for be, b in zip(ema_model.buffers(), model.buffers()):
        be.copy_(b)


def sample_batch(state: TrainState, images: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """A minibatch ``x`` ``(batch_size, C, H, W)`` drawn uniformly with replacement from
    ``images`` ``(N, C, H, W)`` (same device as the state) with the state's generator."""
    idx = torch.randint(images.shape[0], (config.batch_size,), generator=state.generator,
                        device=state.generator.device)
    return images[idx]


def random_crops(z: torch.Tensor, x: torch.Tensor, size: int, generator: torch.Generator,
                 stride: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``size x size`` windows of ``z`` and ``x`` ``(B, C, H, W)`` at one uniform random offset per
    example (a multiple of ``stride``, so that a network equivariant to ``stride``-shifts only sees
    its pooling grid unchanged), wrapping around the borders. Returns ``(z_crop, x_crop)``,
    ``(B, C, size, size)`` each."""
    n, c, H, W = z.shape
    dev = generator.device
    oy = torch.randint(H // stride, (n,), generator=generator, device=dev).to(z.device) * stride
    ox = torch.randint(W // stride, (n,), generator=generator, device=dev).to(z.device) * stride
    ar = torch.arange(size, device=z.device)
    rows, cols = (oy[:, None] + ar) % H, (ox[:, None] + ar) % W          # (B, size) each
    idx = (rows[:, :, None] * W + cols[:, None, :]).view(n, 1, -1).expand(n, c, -1)
    def cut(t):
        return t.flatten(2).gather(2, idx).view(n, c, size, size)
    return cut(z), cut(x)


def _check_crop(config: TrainConfig, model, shape) -> None:
    """A crop must hold at least one pixel whose receptive field does not wrap, fit the images,
    and keep a stride-``s`` network's grid (``crop % s == 0``)."""
    if config.crop is None:
        return
    p, s = model.patch_size, getattr(model, "shift_stride", 1)
    if not (p + 2 <= config.crop <= min(shape[-2:])) or config.crop % s:
        raise ValueError(f"crop must be an integer in [patch_size + 2, image side] = [{p + 2}, "
                         f"{min(shape[-2:])}]{f' and a multiple of {s}' if s > 1 else ''}, got {config.crop}")


def train_step(state: TrainState, x: torch.Tensor, A, B, config: TrainConfig) -> torch.Tensor:
    """One optimisation step of ``eq-training-loss`` (``course/06_training.md``) on the clean
    minibatch ``x`` ``(B, C, H, W)``: ``sigma ~ U[sigma_min, sigma_max]`` ``(B,)`` (or ``log sigma``
    uniform with ``config.sigma_law="log-uniform"``),
    ``y = A x + sigma e`` (:func:`~lemmse_lite.operators.measure`, the state's generator),
    ``z = B y``, loss ``mean (N(z, sigma) - x)^2`` (weighted by ``model.loss_weight(sigma)`` when the
    model defines it: EDM's ``lambda(sigma)``, ``course/10_diffusion.md``); AdamW step, scheduler step, EMA update,
    accumulators. ``config`` resolved. Returns the (detached) loss."""
    lo, hi = config.sigma_range
    gen = state.generator
    u = torch.rand(x.shape[0], generator=gen, device=gen.device)
    sigma = lo + (hi - lo) * u if config.sigma_law == "uniform" else lo * (hi / lo) ** u
    y = measure(A, x, sigma, gen)
    z = B(y) if B is not None else y
    if config.crop is not None:
        z, x = random_crops(z, x, config.crop, gen, getattr(state.model, "shift_stride", 1))
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=config.amp):
        out = (state.model if state.forward is None else state.forward)(z, sigma)  # a compiled module has no truth value
    if config.crop is not None:  # only the pixels whose receptive field does not wrap in the crop
        r = state.model.patch_size // 2
        out, x = out[..., r:out.shape[-2] - r, r:out.shape[-1] - r], x[..., r:x.shape[-2] - r, r:x.shape[-1] - r]
    weight = getattr(state.model, "loss_weight", None)  # EDM's lambda(sigma) (course/10_diffusion.md)
    each = ((out.float() - x) ** 2).flatten(1).mean(1)  # (B,) unweighted loss per example
    loss = each.mean() if weight is None else (weight(sigma) * each).mean()
    _bin_losses(state, each.detach(), sigma, config)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.clip:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.clip)
    step = state.history.completed
    state.optimizer.step()
    state.scheduler.step()
    if config.ema:
        _ema_update(state.ema_model, state.model, config.ema, step)
    state.loss_sum += loss.detach().double()
    state.n_steps += 1
    state.history.completed = step + 1
    return loss.detach()


def _bin_losses(state: TrainState, each, sigma, config: TrainConfig) -> None:
    """Add the per-example losses ``each`` ``(B,)`` to the bins of their ``sigma``."""
    lo, hi = config.sigma_range
    k = ((sigma - lo) / max(hi - lo, 1e-12) * SIGMA_BINS).long().clamp(0, SIGMA_BINS - 1)
    state.bin_sum.index_add_(0, k, each.double())
    state.bin_count.index_add_(0, k, torch.ones_like(each, dtype=torch.float64))


def _log(state: TrainState, lr: float, bar) -> None:
    """Close the logging window: append mean loss / lr / seconds per step to the history."""
    hist, n = state.history, state.n_steps
    hist.step.append(hist.completed)
    hist.loss.append(float(state.loss_sum) / n)
    hist.lr.append(float(lr))
    hist.time.append(state.seconds / n)
    means = (state.bin_sum / state.bin_count).tolist()
    hist.loss_by_sigma.append([m if c > 0 else None for m, c in zip(means, state.bin_count.tolist())])
    state.bin_sum.zero_(), state.bin_count.zero_()
    state.loss_sum.zero_()
    state.n_steps, state.seconds = 0, 0.0
    bar.set_postfix(loss=f"{hist.loss[-1]:.3g}", lr=f"{lr:.2g}")


# ----------------------------------------------------------------------------- train
def _check_images(images, model):
    if isinstance(images, (list, tuple)):
        images = torch.cat(list(images))
    if not torch.is_tensor(images) or images.ndim != 4 or not images.is_floating_point():
        raise TypeError("images must be a float tensor (N, C, H, W)")
    c = getattr(model, "channels", images.shape[1])
    if images.shape[1] != c or images.shape[0] < 1:
        raise ValueError(f"images must be (N, {c}, H, W) with N >= 1, got {tuple(images.shape)}")
    return images


def _check_until(until, steps, checkpoint):
    until = steps if until is None else int(until)
    if not 0 <= until <= steps:
        raise ValueError(f"until must be in [0, steps={steps}], got {until}")
    if until < steps and checkpoint is None:
        raise ValueError("until < steps stops the run early: give a checkpoint to resume from")
    return until


def _open_checkpoint(state: TrainState, path, resume, overwrite) -> None:
    """Resume from ``path`` when asked and it exists; refuse to replace it unless ``overwrite``."""
    if path is None or not path.exists():
        return
    if not resume:
        if overwrite:
            return
        raise CheckpointError(
            f"checkpoint {path} already exists; pass resume=True to continue that run or "
            "overwrite=True to start afresh and replace it (it was left untouched)"
        )
    saved = load_checkpoint(path)
    diff = _fingerprint_mismatch(saved.get("fingerprint", {}), state.history.fingerprint)
    if diff:
        raise CheckpointError(
            f"checkpoint {path} was written for a different run (left untouched); mismatch in "
            + "; ".join(diff)
        )
    try:
        state.load_state_dict(saved)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is incomplete or inconsistent ({exc}); it was left untouched"
        ) from exc


def _run_steps(state, images, A, B, config, until, path, progress, callback=None) -> None:
    """Steps ``history.completed .. until - 1``, logging and checkpointing on schedule;
    ``callback(state)`` after each step."""
    hist = state.history
    bar = tqdm(total=config.steps, initial=hist.completed, disable=not progress, desc="train", leave=False)
    t_start = time.perf_counter()
    for _ in range(hist.completed, until):
        t0 = time.perf_counter()
        step_lr = state.optimizer.param_groups[0]["lr"]
        train_step(state, sample_batch(state, images, config), A, B, config)
        state.seconds += time.perf_counter() - t0
        if hist.completed % config.log_every == 0 or hist.completed == config.steps:
            _log(state, step_lr, bar)
        bar.update(1)
        if callback is not None:
            callback(state)
        if path is not None and hist.completed % config.checkpoint_every == 0 and hist.completed < until:
            save_checkpoint(path, state.state_dict())
    bar.close()
    hist.total_time += time.perf_counter() - t_start


def train(model, images, A=None, B=None, sigma_range=None, steps=None, batch_size=None, lr=None, *,
          config: TrainConfig | None = None, checkpoint=None, resume=False, overwrite=False, until=None,
          progress=True, callback=None, **overrides):
    """Train ``model`` to map ``z = B(A x + sigma e)`` (and ``sigma``) to ``x``
    (``course/06_training.md``, ``eq-training-loss``).

    Args:
        model: ``model(z, sigma) -> x_hat`` on ``(B, C, H, W)``; moved to the device in place.
        images: training set, float tensor ``(N, C, H, W)`` in [0, 1].
        A, B: forward operator and pre-inverse, callables on ``(B, C, H, W)``; ``None`` = identity.
        sigma_range, steps, batch_size, lr: as in :class:`TrainConfig` (``None``: the config's).
        config: a :class:`TrainConfig` (default ``TrainConfig()``).
        checkpoint: path of the checkpoint file (``None``: no checkpoints). Written every
            ``checkpoint_every`` steps and at the end.
        resume: continue from ``checkpoint`` if it exists (fresh start if it does not); its
            fingerprint (architecture, data, operators, hyper-parameters) must match this call.
        overwrite: replace an existing checkpoint instead of refusing (when ``resume=False``).
        until: stop after this step (``<= steps``), keeping the schedule of ``steps`` -- a planned
            interruption; call again with ``resume=True`` to continue. Needs ``checkpoint``.
        progress: tqdm progress bar.
        callback: ``callback(state)`` after every step (:class:`TrainState`; e.g. to keep
            snapshots of ``state.ema_model``), or ``None``.
        **overrides: any other :class:`TrainConfig` field (``device``, ``seed``, ``ema``, ``clip``,
            ``amp``, ``compile``, ``weight_decay``, ``warmup``, ``log_every``,
            ``checkpoint_every``); an unknown name is a ``TypeError``.

    Returns:
        :class:`TrainHistory`; ``history.model`` is ``model``, which now holds the EMA weights.

    Raises:
        CheckpointError: unreadable/foreign checkpoint, fingerprint mismatch, or an existing file
            with ``resume=False`` and ``overwrite=False``. The file is left untouched.
    """
    positional = {"sigma_range": sigma_range, "steps": steps, "batch_size": batch_size, "lr": lr}
    config = _make_config(config, positional, overrides).resolved()
    images = _check_images(images, model)
    _check_crop(config, model, images.shape)
    until = _check_until(until, config.steps, checkpoint)
    state = TrainState.create(model, config, fingerprint(model, images, A, B, config))
    path = Path(checkpoint) if checkpoint is not None else None
    _open_checkpoint(state, path, resume, overwrite)
    _run_steps(state, images.to(config.device), A, B, config, until, path, progress, callback)
    if path is not None:
        save_checkpoint(path, state.state_dict())
    if config.ema:
        model.load_state_dict(state.ema_model.state_dict())
    model.eval()
    return state.history


# ----------------------------------------------------------------------------- run folder
def checkpoint_path(run_dir) -> Path:
    """The resumable checkpoint of a run folder: ``run_dir / "checkpoint.pt"``."""
    return Path(run_dir) / RUN_CHECKPOINT


def save_run(run_dir, model, history: TrainHistory, meta: dict) -> Path:
    """Write ``model.pt`` (``{"meta", "state_dict"}``: ``meta`` must hold ``"config"``, the
    model's ``config`` dict) and ``history.json`` into ``run_dir`` (created). Returns the folder."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    meta = {"config": dict(model.config), **meta}
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(run / RUN_MODEL, {"meta": meta, "state_dict": weights})
    atomic_write(run / RUN_HISTORY, json.dumps({"meta": meta, "history": history.as_dict()}, indent=1))
    return run


def load_run(run_dir, device="cpu"):
    """Rebuild a model saved by :func:`save_run` (``lemmse train``): returns ``(model, meta)``,
    the model in eval mode on ``device``. ``FileNotFoundError`` naming the folder if not a run."""
    path = Path(run_dir) / RUN_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder of lemmse train (no {RUN_MODEL})")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        meta = saved["meta"]
        cfg = dict(meta["config"])
        model = make_model(cfg.pop("family"), **cfg)
        model.load_state_dict(saved["state_dict"])
    except Exception as exc:  # corrupt file, missing keys, other architecture
        raise CheckpointError(f"{path} is not a usable lemmse_lite run ({type(exc).__name__}: "
                              f"{_first_line(exc)})") from exc
    return model.to(device).eval(), meta
