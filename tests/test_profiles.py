"""Tests of lemmse_lite.profiles: field names, selection by LEMMSE_PROFILE, validation."""

import dataclasses
import re
from pathlib import Path

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
    # every sigma of the agreement grid (issue: at least 0.05, 0.1, 0.2, 0.4), none skipped
    assert {0.05, 0.1, 0.2, 0.4} <= set(q.agreement_sigmas) and q.min_agreement == 28.0 and q.control_margin >= 1.0
    part2 = profiles.part_two_settings(q)
    assert part2.n_agreement >= 32 and part2.n_boot >= 1000  # bootstrap intervals over >= 32 test images
    assert max(part2.curve_steps) <= 2 * q.train_steps and q.sweep_width == q.model_width
    assert len(q.n_sweep) >= 3 and max(q.n_sweep) == q.n_train
    assert profiles.FULL.min_agreement == 25.0  # the paper's threshold


def test_part_two_settings_are_checked():
    with pytest.raises(ValueError, match="PartTwoSettings.n_agreement must be a positive int"):
        profiles.PartTwoSettings(n_agreement=0)
    with pytest.raises(ValueError, match="PartTwoSettings.effective_sizes must hold odd"):
        profiles.PartTwoSettings(effective_sizes=(1, 2))
    with pytest.raises(ValueError, match="PartTwoSettings.train_crop must be a positive integer, got -1"):
        profiles.PartTwoSettings(train_crop=-1)
    assert profiles.part_two_settings("paper") == profiles.part_two_settings("full")


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


# ----------------------------------------------------------------------------- chapters 00-05
def test_part_one_values_are_the_chapters():
    s = profiles.part_one_settings("quick")
    assert (s.box_divisor, s.blur_std, s.disk_radius, s.tikhonov_eps) == (4, 1.0, 2.0, 1e-2)
    assert (s.missing_fraction, s.missing_fraction_demo) == (0.3, 0.5)  # 05 (the paper's), 00
    assert (s.eps_mask, s.eps_mask_local, s.eps_mask_mixed) == (1e-2, 1e-1, 0.3)
    assert (s.shift_divisors, s.subset_divisor, s.sigma_small, s.sigma_large) == ((6, 3), 4, 0.01, 1e3)
    assert s.box_side(32) == 8 and s.box_side(28) == 7 and s.box_side(8) == 2
    assert s.shift(32, 32) == (5, 10) and s.shift(28, 28) == (4, 9)
    assert s.subset(400) == 100 and s.subset(3) == 1
    assert profiles.PAPER_PROBLEMS[2] == f"inpainting:missing={s.missing_fraction}"
    assert profiles.PAPER_PROBLEMS[3] == f"deblurring:std={s.blur_std}"


def test_part_one_accessor_follows_get_profile(monkeypatch):
    monkeypatch.setattr(profiles, "_cuda_available", lambda: False)
    for name in ("quick", "full", "paper", profiles.QUICK, None):
        assert profiles.part_one_settings(name) is profiles.PART_ONE
    with pytest.raises(ValueError, match="valid: quick, full"):
        profiles.part_one_settings("medium")


def test_part_one_is_frozen_and_validated():
    s = profiles.PART_ONE
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.blur_std = 2.0
    bads = {"box_divisor": 0, "subset_divisor": True, "shift_divisors": (6,), "missing_fraction": 1.0,
            "missing_fraction_demo": 0.0, "eps_mask": -1e-2, "eps_mask_local": 1.5, "eps_mask_mixed": "0.3",
            "blur_std": 0.0, "disk_radius": float("inf"), "tikhonov_eps": -1.0, "sigma_small": 0,
            "sigma_large": 1e-3}
    for field, value in bads.items():
        with pytest.raises(ValueError, match=rf"^PartOneSettings\.{field} must "):
            dataclasses.replace(s, **{field: value})
    with pytest.raises(ValueError, match="at least box_divisor"):
        s.box_side(3)


# Literal problem parameters that chapters 00-05 must read from part_one_settings instead.
LITERALS = [r"gaussian_kernel\(std=[\d.]", r"disk_kernel\(radius=[\d.]", r"random_mask\([^)]*,\s*[\d.]+\s*,\s*seed",
            r"eps_mask\([^)]*,\s*[\d.e-]+\)", r"tikhonov\([\d.e-]+\)", r"center_box_mask\([^)]*//\s*4\)",
            r"//\s*6,\s*\w+\s*//\s*3"]


@pytest.mark.parametrize("chapter", sorted((Path(__file__).resolve().parents[1] / "course").glob("0[0-5]_*.md")))
def test_part_one_chapters_read_the_settings(chapter):
    code = "\n".join(re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", chapter.read_text(encoding="utf-8"), re.S | re.M))
    code = re.sub(r"#.*", "", code)                                   # comments may quote the values
    assert "profiles.part_one_settings(prof)" in code
    for pattern in LITERALS:
        assert not re.search(pattern, code), f"{chapter.name}: a literal problem parameter ({pattern}); use part_one_settings"
