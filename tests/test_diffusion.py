"""Tests of lemmse_lite.experiments.diffusion: the EDM schedule, the probability-flow sampler with the MMSE,
LE-MMSE and network denoisers, EDM's preconditioning, log-uniform training and the patch measure."""

import math

import pytest
import torch
from torch import nn

from lemmse_lite.estimators import patches
from lemmse_lite.experiments import diffusion as D
from lemmse_lite.networks import models, training


def _two_images(size=8):
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, size, size, generator=g)


# ----------------------------------------------------------------------------- schedule

def test_schedule_is_edm_formula():
    s = D.Schedule(n_steps=5, sigma_min=0.02, sigma_max=80.0, rho=7.0).sigmas()
    a, b = 80.0 ** (1 / 7), 0.02 ** (1 / 7)
    expected = [(a + i / 4 * (b - a)) ** 7 for i in range(5)]  # the formula, written out
    assert s.dtype == torch.float64 and s.shape == (5,)
    assert torch.allclose(s, torch.tensor(expected, dtype=torch.float64), rtol=1e-12)
    assert s[0] == 80.0 and s[-1] == 0.02 and bool((s[1:] < s[:-1]).all())


@pytest.mark.parametrize("kwargs,error,match", [
    ({"n_steps": 1}, ValueError, "n_steps"),
    ({"n_steps": 0}, ValueError, "n_steps"),
    ({"n_steps": 2.5}, ValueError, "n_steps"),
    ({"n_steps": True}, ValueError, "n_steps"),
    ({"sigma_min": 50.0}, ValueError, "sigma_min must be below sigma_max"),
    ({"sigma_min": 0.0}, ValueError, "sigma_min"),
    ({"sigma_max": float("inf")}, ValueError, "sigma_max"),
    ({"sigma_max": "40"}, TypeError, "sigma_max"),
    ({"rho": -1.0}, ValueError, "rho"),
])
def test_schedule_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        D.Schedule(**kwargs)


def test_sample_validation():
    eps = D.initial_noise(1, (1, 4, 4))
    ok = lambda x, s: x
    with pytest.raises(TypeError, match="denoiser"):
        D.sample(None, eps)
    with pytest.raises(ValueError, match="method"):
        D.sample(ok, eps, method="rk4")
    with pytest.raises(TypeError, match="schedule"):
        D.sample(ok, eps, schedule=(10, 0.01, 40))
    with pytest.raises(ValueError, match="denoiser must return a tensor of shape"):
        D.sample(lambda x, s: x[:, :, :2], eps)
    with pytest.raises((TypeError, ValueError), match="noise"):
        D.sample(ok, eps[0])
    with pytest.raises(ValueError, match="shape"):
        D.initial_noise(2, (4, 4))
    with pytest.raises(ValueError, match="p_max"):
        D.growing_patch_size(7, 5, 0.01, 40.0)


def test_initial_noise_is_seeded():
    a, b = D.initial_noise(3, (1, 5, 5), seed=4), D.initial_noise(3, (1, 5, 5), seed=4)
    assert torch.equal(a, b) and not torch.equal(a, D.initial_noise(3, (1, 5, 5), seed=5))


# ----------------------------------------------------------------------------- the sampler

def test_heun_solves_the_gaussian_ode():
    """Gaussian prior N(mu, s^2 I): D(x, sigma) = mu + s^2/(s^2 + sigma^2)(x - mu), and the ODE's
    solution is x(sigma) - mu = (x(sigma_max) - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_max^2)."""
    mu, s2 = 0.4, 0.05
    den = lambda x, sigma: mu + s2 / (s2 + sigma**2) * (x - mu)
    eps = D.initial_noise(4, (1, 6, 6), seed=1).double()
    x_end = mu + eps * 40.0 * math.sqrt(s2 + 0.01**2) / math.sqrt(s2 + 40.0**2)
    truth = den(x_end, 0.01)
    err = {(m, n): float((D.sample(den, eps, D.Schedule(n_steps=n), method=m) - truth).abs().max())
           for m in D.METHODS for n in (15, 30)}
    assert err[("heun", 30)] < 0.02 and err[("euler", 30)] > 3 * err[("heun", 30)]
    assert err[("heun", 15)] / err[("heun", 30)] > 3.0  # second order: about 4x per halving
    assert 1.5 < err[("euler", 15)] / err[("euler", 30)] < 2.5  # first order: about 2x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mmse_sampler_returns_a_training_image(seed, one_thread):
    train = _two_images()
    eps = D.initial_noise(3, (1, 8, 8), seed=seed)
    x = D.sample(D.MMSEDenoiser(train), eps, D.Schedule(n_steps=10))
    dist = (x[:, None] - train[None]).flatten(2).abs().amax(2)  # (3, 2)
    assert float(dist.min(1).values.max()) < 1e-5
    assert float(dist.max(1).values.min()) > 0.1  # and not some blend of the two


def test_le_mmse_sampler_commutes_with_shifts_of_the_noise(one_thread):
    train = _two_images()
    den = D.LEMMSEDenoiser(train, D.growing_patch_size(3, 5, 0.01, 40.0))
    sch = D.Schedule(n_steps=6)
    eps = D.initial_noise(2, (1, 8, 8), seed=3).double()  # float64: exact up to rounding
    x = D.sample(den, eps, sch)
    for g in ((1, 3), (4, 0)):
        xg = D.sample(den, patches.shift(eps, g), sch)
        assert float((xg - patches.shift(x, g)).abs().max()) < 1e-9
        assert float((xg - x).abs().max()) > 0.1  # the shift does move the sample
    assert float(x.std()) > 0.05  # a structured image, not a constant (which commutes trivially)
    assert den.size_at(40.0, 8, 8) == 5 and den.size_at(0.01, 8, 8) == 3


def test_le_mmse_patch_size_is_capped_and_checked():
    den = D.LEMMSEDenoiser(_two_images(), lambda s: 11)
    assert den.size_at(1.0, 8, 8) == 7
    with pytest.raises(ValueError, match="patch_size"):
        D.LEMMSEDenoiser(_two_images(), lambda s: 4).size_at(1.0, 8, 8)
    with pytest.raises(ValueError, match="patch_size"):
        D.LEMMSEDenoiser(_two_images(), 4)


# ----------------------------------------------------------------------------- EDM preconditioning

class _Affine(nn.Module):
    """A stand-in for a local network: ``F(u, s) = u + c`` (residual branch ``c``)."""

    def __init__(self, c):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(float(c)))
        self.channels, self.patch_size, self.config = 1, 1, {"family": "affine"}

    def forward(self, u, s):
        assert bool(((s > 0) & (s < 1)).all())  # the bounded noise conditioning
        return u + self.c


def test_edm_scaling_formulas():
    z = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    sigma = torch.tensor([0.01, 1.0, 40.0], dtype=torch.float64)
    sd = 0.5
    for c in (0.0, 0.7):
        d = D.EDMPreconditioner(_Affine(c).double(), sigma_data=sd)(z, sigma)
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / torch.sqrt(sigma**2 + sd**2)
        assert torch.allclose(d, c_skip[:, None, None, None] * z + c * c_out[:, None, None, None])
        assert torch.allclose(D.EDMPreconditioner(_Affine(c)).loss_weight(sigma), 1 / c_out**2)


def test_edm_network_stays_local_and_equivariant():
    net = D.EDMPreconditioner(models.make_model("resnet", patch_size=3, width=8, depth=1))
    z = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out = net(patches.shift(z, (2, 5)), 3.0)
        assert float((out - patches.shift(net(z, 3.0), (2, 5))).abs().max()) < 1e-5
    assert models.receptive_field(net, (1, 8, 8)).is_full_window(3)


def test_log_uniform_sigma_law():
    seen = []

    class Record(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))
            self.channels = 1

        def forward(self, z, sigma):
            seen.append(sigma.detach().clone())
            return z * self.w

    images = torch.rand(4, 1, 4, 4)
    training.train(Record(), images, sigma_range=(0.01, 100.0), steps=8, batch_size=256, progress=False,
                   sigma_law="log-uniform", ema=0)
    s = torch.cat(seen)
    assert bool(((s >= 0.01) & (s <= 100.0)).all())
    assert 0.5 < float(s.median()) < 2.0  # log-uniform: median sqrt(0.01 * 100) = 1 (uniform: ~50)
    assert abs(float(s.log().mean())) < 0.3
    with pytest.raises(ValueError, match="sigma_law"):
        training.TrainConfig(sigma_law="gamma")


def test_trained_network_is_cached_and_tracks_nothing_stale(tmp_path, one_thread):
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sch = D.Schedule(n_steps=4)
    cfg = D.diffusion_train_config(sch, steps=4, batch_size=4, lr=1e-3)
    assert cfg.sigma_law == "log-uniform" and cfg.sigma_range == (0.01, 40.0)
    a = D.trained_diffusion_network(images, 3, 8, 1, cfg, cache=tmp_path)
    b = D.trained_diffusion_network(images, 3, 8, 1, cfg, cache=tmp_path)
    assert not a.from_cache and b.from_cache and a.history == b.history
    assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))
    c = D.trained_diffusion_network(images + 0.01, 3, 8, 1, cfg, cache=tmp_path)
    assert not c.from_cache  # other data, other key
    x = D.sample(D.NetworkDenoiser(b), D.initial_noise(2, (1, 8, 8)), sch)
    assert x.shape == (2, 1, 8, 8) and bool(torch.isfinite(x).all())
    with pytest.raises(TypeError, match="net"):
        D.NetworkDenoiser(lambda z, s: z)
    with pytest.raises(TypeError, match="config"):
        D.trained_diffusion_network(images, 3, 8, 1, {"steps": 4}, cache=tmp_path)


# ----------------------------------------------------------------------------- patch measure

def test_nearest_patch_psnr_against_brute_force():
    g = torch.Generator().manual_seed(2)
    train, x = torch.rand(3, 1, 6, 6, generator=g), torch.rand(1, 1, 6, 6, generator=g)
    got = D.nearest_patch_psnr(x, train, 3, chunk_size=2)
    for b in range(1):
        for i in range(6):
            for j in range(6):
                q = torch.roll(x[b, 0], (1 - i, 1 - j), (0, 1))[:3, :3].double()
                best = min(float(((q - torch.roll(t[0], (1 - a, 1 - c), (0, 1))[:3, :3]) ** 2).mean())
                           for t in train for a in range(6) for c in range(6))
                assert abs(float(got[b, i, j]) - (-10 * math.log10(best))) < 1e-6
    copy = D.nearest_patch_psnr(patches.shift(train[1:2], (2, 3)), train, 3)
    assert float(copy.min()) > 200  # a shifted training image is made of training patches


def test_every_denoiser_is_a_denoiser():
    """One Protocol for D(x, sigma): the diffusion denoisers and the restoration networks."""
    from lemmse_lite.experiments import diffusion
    from lemmse_lite.networks import models

    train = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    net = models.make_model("resnet", patch_size=3, channels=1, width=4, depth=1)
    for d in (diffusion.MMSEDenoiser(train), diffusion.LEMMSEDenoiser(train, 3), diffusion.NetworkDenoiser(net),
              diffusion.EDMPreconditioner(net), net):
        assert isinstance(d, diffusion.Denoiser)
        with torch.no_grad():
            assert d(train[:2], 0.1).shape == (2, 1, 8, 8)
    assert not isinstance(object(), diffusion.Denoiser)
