"""store: the keys of cached results cover every module the cached computation can run, so an edited
source never serves an old result (issue: hand-written source lists left modules out)."""

import shutil
import subprocess
import sys

import pytest
import torch

from lemmse_lite import store

PACKAGE = store.PACKAGE_DIR


def _imported_modules(root):
    """The lemmse_lite modules Python actually loads when importing ``root`` (an independent oracle:
    the interpreter, not the ast walk of store.source_closure)."""
    code = (f"import sys, lemmse_lite.{root}; print(' '.join(sorted(m.split('.')[1] for m in sys.modules "
            "if m.startswith('lemmse_lite.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("root", ["zoo", "experiments", "diffusion", "reproduce"])
def test_closure_holds_every_module_the_import_loads(root):
    closure = set(store.source_closure((root,)))
    loaded = _imported_modules(root)
    assert loaded <= closure, f"loaded but not in the key: {sorted(loaded - closure)}"
    assert root in closure and "__init__" in closure


def test_network_key_leaves_out_what_training_cannot_run():
    closure = store.source_closure(("zoo",))
    assert {"training", "models", "operators", "data", "checks", "problems", "zoo"} <= set(closure)
    assert not {"experiments", "estimators", "compare", "plotting", "course"} & set(closure)


@pytest.fixture
def package_copy(tmp_path):
    dst = tmp_path / "pkg"
    shutil.copytree(PACKAGE, dst, ignore=shutil.ignore_patterns("__pycache__", "weights"))
    return dst


@pytest.mark.parametrize("module", sorted(store.source_closure(("experiments",))))
def test_editing_any_module_of_the_closure_changes_the_key(package_copy, module):
    settings = {"kind": "estimate", "sigma": 0.1}
    before = store.cache_key(settings, ("experiments",), folder=package_copy)
    path = package_copy / f"{module}.py"
    path.write_text(path.read_text() + "\n_EDITED = 1\n")  # a statement: code that runs
    assert store.cache_key(settings, ("experiments",), folder=package_copy) != before


def test_a_module_outside_the_closure_does_not_change_the_key(package_copy):
    settings = {"kind": "network"}
    before = store.cache_key(settings, ("zoo",), folder=package_copy)
    path = package_copy / "plotting.py"
    path.write_text(path.read_text() + "\n_EDITED = 1\n")
    assert store.cache_key(settings, ("zoo",), folder=package_copy) == before
    (package_copy / "training.py").write_text((package_copy / "training.py").read_text() + "\n_EDITED = 1\n")
    assert store.cache_key(settings, ("zoo",), folder=package_copy) != before


def test_a_comment_or_docstring_edit_keeps_the_key(package_copy):
    """Only code keys a result: rewording the docs of the training code retrains nothing."""
    settings = {"kind": "network"}
    before = store.cache_key(settings, ("zoo",), folder=package_copy)
    path = package_copy / "training.py"
    text = path.read_text()
    first_doc = text.index('"""') + 3
    path.write_text(text[:first_doc] + "Reworded. " + text[first_doc:] + "\n# a comment\n")
    assert store.cache_key(settings, ("zoo",), folder=package_copy) == before


def test_cached_never_reuses_an_entry_of_other_code(tmp_path, monkeypatch):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.ones(2) * len(calls)}

    first = store.cached("demo", {"a": 1}, compute, cache=tmp_path)
    again = store.cached("demo", {"a": 1}, compute, cache=tmp_path)
    assert len(calls) == 1 and torch.equal(first["x"], again["x"])
    monkeypatch.setattr(store, "source_hash", lambda roots, folder=PACKAGE: "another code")
    third = store.cached("demo", {"a": 1}, compute, cache=tmp_path)
    assert len(calls) == 2 and third["x"][0] == 2


def test_roots_must_be_modules():
    with pytest.raises(ValueError, match="roots must name modules"):
        store.source_closure(("no_such_module",))
