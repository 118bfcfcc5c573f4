"""store: the keys of cached results cover every module the cached computation can run, so an edited
source never serves an old result (issue: hand-written source lists left modules out)."""

import ast
import shutil
import subprocess
import sys

import pytest
import torch

from lemmse_lite import sources, store

PACKAGE = store.PACKAGE_DIR


def _imported_modules(dotted):
    """The lemmse_lite modules Python actually loads when importing ``lemmse_lite.<dotted>`` (an
    independent oracle: the interpreter, not the ast walk of store.source_closure), each named by
    the last part of its dotted name, with the packages whose ``__init__`` runs some code."""
    code = (f"import sys, lemmse_lite.{dotted}\n"
            "for name, m in sorted(sys.modules.items()):\n"
            "    if name.startswith('lemmse_lite.'):\n"
            "        print(name.split('.')[-1], int(m.__file__.endswith('__init__.py')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {line.split()[0]: line.split()[1] == "1" for line in out.stdout.splitlines()}


def _runs_code(package):
    body = ast.parse((PACKAGE / package / "__init__.py").read_text()).body
    return len(body) > 1 or (body and not isinstance(body[0], ast.Expr))


@pytest.mark.parametrize("root,dotted", [("zoo", "networks.zoo"), ("experiments", "experiments"),
                                         ("diffusion", "experiments.diffusion"), ("reproduce", "experiments.reproduce")])
def test_closure_holds_every_module_the_import_loads(root, dotted):
    closure = set(store.source_closure((root,)))
    loaded = {name for name, package in _imported_modules(dotted).items() if not package or _runs_code(name)}
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
    path = sources.module_index(package_copy)[module]
    path.write_text(path.read_text() + "\n_EDITED = 1\n")  # a statement: code that runs
    assert store.cache_key(settings, ("experiments",), folder=package_copy) != before


def test_a_module_outside_the_closure_does_not_change_the_key(package_copy):
    settings = {"kind": "network"}
    before = store.cache_key(settings, ("zoo",), folder=package_copy)
    path = package_copy / "plotting.py"  # outside the networks' closure
    path.write_text(path.read_text() + "\n_EDITED = 1\n")
    assert store.cache_key(settings, ("zoo",), folder=package_copy) == before
    training = package_copy / "networks" / "training.py"
    training.write_text(training.read_text() + "\n_EDITED = 1\n")
    assert store.cache_key(settings, ("zoo",), folder=package_copy) != before


def test_a_comment_or_docstring_edit_keeps_the_key(package_copy):
    """Only code keys a result: rewording the docs of the training code retrains nothing."""
    settings = {"kind": "network"}
    before = store.cache_key(settings, ("zoo",), folder=package_copy)
    path = package_copy / "networks" / "training.py"
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


# ----------------------------------------------------------------------------- keys and layout

def _package(root, files: dict):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


FLAT = {"__init__.py": "V = 1\n", "n.py": "def f(x):\n    return x + 1\n",
        "k.py": "K = 2\n", "m.py": "from . import k, n\nfrom .n import f\n\ndef g(x):\n    return f(x) * k.K\n"}
MOVED = {"__init__.py": "V = 1\n", "a/__init__.py": '"""A folder; runs nothing."""\n',
         "a/n.py": FLAT["n.py"], "k.py": FLAT["k.py"],
         "b/__init__.py": '"""Another."""\n',
         "b/m.py": "from .. import k\nfrom ..a.n import f\nfrom ..a import n\n\ndef g(x):\n    return f(x) * k.K\n"}


def test_moving_modules_into_folders_keeps_the_key(tmp_path):
    flat = _package(tmp_path / "flat", FLAT)
    moved = _package(tmp_path / "moved", MOVED)
    assert store.source_closure("m", flat) == store.source_closure("m", moved) == ("__init__", "k", "m", "n")
    assert store.source_hash("m", flat) == store.source_hash("m", moved)
    (moved / "a" / "n.py").write_text("def f(x):\n    return x + 2\n")  # a statement changes
    assert store.source_hash("m", flat) != store.source_hash("m", moved)


def test_a_package_init_with_code_joins_the_closure(tmp_path):
    pkg = _package(tmp_path / "p", {**MOVED, "a/__init__.py": "from .n import f\n"})
    assert store.source_closure("m", pkg) == ("__init__", "a", "k", "m", "n")
    before = store.source_hash("m", pkg)
    (pkg / "a" / "__init__.py").write_text("from .n import f\nW = 3\n")
    assert store.source_hash("m", pkg) != before


def test_two_modules_of_one_name_are_refused(tmp_path):
    pkg = _package(tmp_path / "p", {**MOVED, "b/n.py": "X = 1\n"})
    with pytest.raises(ValueError, match="two modules of .* are named n"):
        store.source_closure("m", pkg)


def test_the_package_names_each_module_once():
    index = sources.module_index()
    assert index["engine"] == PACKAGE / "estimators" / "engine.py"
    assert index["estimators"] == PACKAGE / "estimators" / "__init__.py" and index["__init__"] == PACKAGE / "__init__.py"
    assert len(index) == len([p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts])
