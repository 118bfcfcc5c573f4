"""Training a network for an inverse problem (THEORY.md §7), with resumable atomic checkpoints.

One step: ``x ~ D`` (uniform minibatch of the training set), ``sigma ~ U[sigma_min, sigma_max]``
per example, ``y = A x + sigma e``, ``z = B y``, loss ``mean (N_w(z, sigma) - x)^2``. Its
population optimum over a local equivariant class is the LE-MMSE (§4).

Optimiser: AdamW, linear warm-up then cosine decay, gradient clipping, an exponential moving
average (EMA) of the weights -- the EMA weights are what ``train`` leaves in the model. bfloat16
autocast and ``torch.compile`` are used on CUDA only.

Reproducibility: every random draw (minibatch, sigma, noise) comes from one ``torch.Generator``
whose state is checkpointed with the model, EMA, optimiser, scheduler, step and history, so a run
that is killed and resumed gives the same history and weights as an uninterrupted one (same
device). Checkpoints are written atomically (temporary file in the same folder, fsync,
``os.replace``); a corrupt or mismatched checkpoint raises :class:`CheckpointError` and is never
overwritten.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["CheckpointError", "TrainHistory", "load_checkpoint", "save_checkpoint", "train"]

CHECKPOINT_FORMAT = "lemmse_lite.training/1"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: unreadable, not ours, or written for a different run."""


@dataclass
class TrainHistory:
    """What :func:`train` logged, one entry per logged step.

    ``step``: 1-based step numbers; ``loss``: mean training loss over the steps since the previous
    entry; ``lr``: learning rate of the logged step; ``time``: mean wall-clock seconds per step over
    the same window. ``steps``: planned total, ``completed``: steps done so far. ``model``: the
    trained model holding the EMA weights (not saved in checkpoints).
    """

    step: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    time: list = field(default_factory=list)
    steps: int = 0
    completed: int = 0
    total_time: float = 0.0
    fingerprint: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False, compare=False)

    def as_dict(self):
        """Plain dict (JSON-serialisable), without the model."""
        d = asdict(self)
        d.pop("model")
        return d


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, state):
    """Atomically write ``state`` with ``torch.save``: temp file in the same folder, fsync,
    ``os.replace``. A crash leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable (best effort; not available everywhere)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


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
def _tensor_digest(t):
    data = t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


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


def _fingerprint(model, images, A, B, hyper):
    fp = {
        "model": _model_signature(model),
        "data": f"{tuple(images.shape)} {_tensor_digest(images)}",
        "A": _operator_signature(A, images.shape[1:]),
        "B": _operator_signature(B, images.shape[1:]),
        **hyper,
    }
    return json.loads(json.dumps(fp))  # tuples -> lists, as they come back from a checkpoint


# ----------------------------------------------------------------------------- helpers
def _lr_lambda(steps, warmup):
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""

    def f(s):
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, steps - warmup))))

    return f


@torch.no_grad()
def _ema_update(ema_model, model, decay, step):
    d = min(decay, (1 + step) / (10 + step))  # short-run friendly warm-up of the EMA
    for pe, p in zip(ema_model.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1 - d)
    for be, b in zip(ema_model.buffers(), model.buffers()):
        be.copy_(b)


def _check_images(images, model):
    if isinstance(images, (list, tuple)):
        images = torch.cat(list(images))
    if not torch.is_tensor(images) or images.ndim != 4 or not images.is_floating_point():
        raise TypeError("images must be a float tensor (N, C, H, W)")
    c = getattr(model, "channels", images.shape[1])
    if images.shape[1] != c or images.shape[0] < 1:
        raise ValueError(f"images must be (N, {c}, H, W) with N >= 1, got {tuple(images.shape)}")
    return images


def _check_sigma_range(sigma_range):
    lo, hi = (sigma_range, sigma_range) if isinstance(sigma_range, (int, float)) else sigma_range
    lo, hi = float(lo), float(hi)
    if not 0 <= lo <= hi:
        raise ValueError(
            f"sigma_range must be (sigma_min, sigma_max) with 0 <= min <= max, got {sigma_range!r}"
        )
    return lo, hi


# ----------------------------------------------------------------------------- train
def train(
    model,
    images,
    A=None,
    B=None,
    sigma_range=(0.05, 0.3),
    steps=1000,
    batch_size=32,
    lr=2e-3,
    *,
    device=None,
    seed=0,
    ema=0.999,
    clip=1.0,
    amp=None,
    compile=False,
    weight_decay=1e-4,
    warmup=None,
    checkpoint=None,
    checkpoint_every=500,
    resume=False,
    overwrite=False,
    until=None,
    progress=True,
    log_every=None,
):
    """Train ``model`` to map ``z = B(A x + sigma e)`` (and ``sigma``) to ``x`` (THEORY.md §7).

    Args:
        model: ``model(z, sigma) -> x_hat`` on ``(B, C, H, W)``; moved to ``device`` in place.
        images: training set, float tensor ``(N, C, H, W)`` in [0, 1].
        A, B: forward operator and pre-inverse, callables on ``(B, C, H, W)``; ``None`` = identity.
        sigma_range: ``(sigma_min, sigma_max)`` (or one float); sigma is uniform per example.
        steps, batch_size, lr: optimisation length, minibatch size (drawn with replacement), peak
            learning rate of AdamW (``weight_decay``), reached after ``warmup`` steps (default
            ``min(100, steps // 20)``) and decayed with a cosine to 0 at ``steps``.
        device: default ``"cuda"`` if available, else ``"cpu"``.
        seed: seeds the one generator behind every random draw.
        ema: EMA decay of the weights (``0``/``None``: no averaging).
        clip: max global gradient norm (``None``: no clipping).
        amp: bfloat16 autocast; default (and only allowed) on CUDA.
        compile: ``torch.compile`` the forward pass (CUDA only, otherwise ignored).
        checkpoint: path of the checkpoint file (``None``: no checkpoints). Written every
            ``checkpoint_every`` steps and at the end.
        resume: continue from ``checkpoint`` if it exists (fresh start if it does not); its
            fingerprint (architecture, data, operators, hyper-parameters) must match this call.
        overwrite: replace an existing checkpoint instead of refusing (when ``resume=False``).
        until: stop after this step (``<= steps``), keeping the schedule of ``steps`` -- a planned
            interruption; call again with ``resume=True`` to continue. Needs ``checkpoint``.
        progress: tqdm progress bar. log_every: history interval (default ``max(1, steps // 100)``).

    Returns:
        :class:`TrainHistory`; ``history.model`` is ``model``, which now holds the EMA weights.

    Raises:
        CheckpointError: unreadable/foreign checkpoint, fingerprint mismatch, or an existing file
            with ``resume=False`` and ``overwrite=False``. The file is left untouched.
    """
    images = _check_images(images, model)
    lo, hi = _check_sigma_range(sigma_range)
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"steps, batch_size and lr must be positive, got {steps}, {batch_size}, {lr}"
        )
    until = steps if until is None else int(until)
    if not 0 <= until <= steps:
        raise ValueError(f"until must be in [0, steps={steps}], got {until}")
    if until < steps and checkpoint is None:
        raise ValueError("until < steps stops the run early: give a checkpoint to resume from")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    amp = cuda if amp is None else bool(amp)
    if amp and not cuda:
        raise ValueError("amp (bfloat16 autocast) is only supported on CUDA here")
    warmup = min(100, steps // 20) if warmup is None else int(warmup)
    log_every = max(1, steps // 100) if log_every is None else int(log_every)
    ema = float(ema or 0.0)

    hyper = {
        "sigma_range": [lo, hi],
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup": warmup,
        "ema": ema,
        "clip": clip,
        "amp": amp,
        "seed": seed,
        "log_every": log_every,
    }
    fingerprint = _fingerprint(model, images, A, B, hyper)

    model.to(device).train()
    images = images.to(device)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(steps, warmup))
    gen = torch.Generator(device=device).manual_seed(seed)
    hist = TrainHistory(steps=steps, fingerprint=fingerprint, model=model)
    acc = {"loss": torch.zeros((), dtype=torch.float64, device=device), "n": 0, "time": 0.0}

    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        if resume:
            _restore(
                path, fingerprint, model, ema_model, optimizer, scheduler, gen, hist, acc, device
            )
        elif not overwrite:
            raise CheckpointError(
                f"checkpoint {path} already exists; pass resume=True to continue that run or "
                "overwrite=True to start afresh and replace it (it was left untouched)"
            )

    def save():
        if path is not None:
            save_checkpoint(path, _state(model, ema_model, optimizer, scheduler, gen, hist, acc))

    forward = torch.compile(model) if (compile and cuda) else model
    N = images.shape[0]
    bar = _progress_bar(steps, hist.completed, progress)
    t_start = time.perf_counter()
    for step in range(hist.completed, until):
        t0 = time.perf_counter()
        idx = torch.randint(N, (batch_size,), generator=gen, device=device)
        x = images[idx]
        sigma = lo + (hi - lo) * torch.rand(batch_size, generator=gen, device=device)
        noise = torch.randn(x.shape, generator=gen, device=device)
        y = (A(x) if A is not None else x) + sigma[:, None, None, None] * noise
        z = B(y) if B is not None else y
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = forward(z, sigma)
        loss = F.mse_loss(out.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        step_lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        if ema:
            _ema_update(ema_model, model, ema, step)
        acc["loss"] += loss.detach().double()
        acc["n"] += 1
        acc["time"] += time.perf_counter() - t0
        hist.completed = step + 1
        if hist.completed % log_every == 0 or hist.completed == steps:
            _log(hist, acc, step_lr, bar)
        bar.update(1)
        if path is not None and hist.completed % checkpoint_every == 0 and hist.completed < until:
            save()
    bar.close()
    hist.total_time += time.perf_counter() - t_start
    save()
    if ema:
        model.load_state_dict(ema_model.state_dict())
    model.eval()
    return hist


def _log(hist, acc, lr, bar):
    n = acc["n"]
    hist.step.append(hist.completed)
    hist.loss.append(float(acc["loss"]) / n)
    hist.lr.append(float(lr))
    hist.time.append(acc["time"] / n)
    acc["loss"].zero_()
    acc["n"], acc["time"] = 0, 0.0
    bar.set_postfix(loss=f"{hist.loss[-1]:.3g}", lr=f"{lr:.2g}")


def _progress_bar(total, initial, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", leave=False)


def _state(model, ema_model, optimizer, scheduler, gen, hist, acc):
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "ema": ema_model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": hist.as_dict(),
        "accumulator": {"loss": acc["loss"].detach().cpu(), "n": acc["n"], "time": acc["time"]},
        "fingerprint": hist.fingerprint,
    }


def _restore(path, fingerprint, model, ema_model, optimizer, scheduler, gen, hist, acc, device):
    state = load_checkpoint(path)
    diff = _fingerprint_mismatch(state.get("fingerprint", {}), fingerprint)
    if diff:
        raise CheckpointError(
            f"checkpoint {path} was written for a different run (left untouched); mismatch in "
            + "; ".join(diff)
        )
    try:
        model.load_state_dict(state["model"])
        ema_model.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        for k in ("step", "loss", "lr", "time", "completed", "total_time"):
            setattr(hist, k, state["history"][k])
        acc["loss"].copy_(state["accumulator"]["loss"])
        acc["n"], acc["time"] = state["accumulator"]["n"], state["accumulator"]["time"]
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is incomplete or inconsistent ({exc}); it was left untouched"
        ) from exc
