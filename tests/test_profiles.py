"""Tests of lemmse_lite.profiles: field names, selection by LEMMSE_PROFILE, validation."""

import dataclasses

import pytest

from lemmse_lite import profiles
from lemmse_lite.profiles import FIELD_DOCS, Profile, get_profile

CONTRACT_FIELDS = [
    "name",
    "device",
    "dataset",
    "dataset_rgb",
    "dataset_shift",
    "image_size",
    "n_train",
    "n_test",
    "patch_size",
    "patch_sizes",
    "sigmas",
    "sigma_range",
    "model_width",
    "model_depth",
    "train_steps",
    "batch_size",
    "lr",
    "chunk_size",
    "seed",
    "sweep_steps",
    "sweep_width",
    "agreement_sigmas",
    "n_sweep",
    "min_agreement",
    "control_margin",
]


def test_fields_are_the_contract_and_documented():
    assert [f.name for f in dataclasses.fields(Profile)] == CONTRACT_FIELDS
    assert set(FIELD_DOCS) == set(CONTRACT_FIELDS)


@pytest.mark.parametrize("cuda,expected", [(False, "quick"), (True, "full")])
def test_default_follows_the_hardware(monkeypatch, cuda, expected):
    monkeypatch.delenv("LEMMSE_PROFILE", raising=False)
    monkeypatch.setattr(profiles, "_cuda_available", lambda: cuda)
    profile = get_profile()
    assert profile.name == expected and profile.device == ("cuda" if cuda else "cpu")


def test_environment_variable_selects(monkeypatch):
    monkeypatch.setattr(profiles, "_cuda_available", lambda: False)
    monkeypatch.setenv("LEMMSE_PROFILE", "full")
    full = get_profile()
    assert full.name == "full" and full.n_train == 10_000 and full.device == "cpu"
    monkeypatch.setenv("LEMMSE_PROFILE", " Quick ")
    assert get_profile() == profiles.QUICK
    monkeypatch.setenv("LEMMSE_PROFILE", "")
    assert get_profile().name == "quick"
    assert get_profile("full").name == "full"  # an explicit name wins over the variable


def test_unknown_profile_errors(monkeypatch):
    with pytest.raises(ValueError, match="valid: quick, full"):
        get_profile("medium")
    monkeypatch.setenv("LEMMSE_PROFILE", "huge")
    with pytest.raises(ValueError, match="LEMMSE_PROFILE"):
        get_profile()


def test_quick_settings_fit_the_course():
    q = profiles.QUICK
    assert (q.dataset, q.dataset_rgb, q.dataset_shift) == ("photos", "photos-rgb", "faces")
    assert 300 <= q.n_train <= 400 and q.image_size == 32 and q.device == "cpu"
    assert q.patch_size in q.patch_sizes
    assert q.agreement_sigmas == (0.05, 0.2) and q.min_agreement == 28.0 and q.control_margin >= 1.0
    assert len(q.n_sweep) >= 3 and max(q.n_sweep) == q.n_train
    assert profiles.FULL.min_agreement == 25.0  # the paper's threshold


def test_replace_describe_and_validation():
    q = get_profile("quick")
    small = q.replace(n_train=10)
    assert small.n_train == 10 and q.n_train == 400
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.n_train = 3
    text = q.describe()
    assert str(q) == text and all(f"{f} = " in text for f in CONTRACT_FIELDS)
    assert len(text.splitlines()) == len(CONTRACT_FIELDS) + 1
    bads = ({"patch_size": 4}, {"n_train": 0}, {"sigma_range": (0.5, 0.1)}, {"device": "tpu"},
            {"n_sweep": (50, 400)}, {"n_sweep": (50, 150, 0)}, {"agreement_sigmas": ()},
            {"sweep_steps": 0})
    for bad in bads:
        with pytest.raises(ValueError):
            q.replace(**bad)
