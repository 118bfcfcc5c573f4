"""``scripts/mutation_check.py`` changes one line of an estimator module per mutation: each
mutation's text must still occur exactly once in the module it names, or a refactor of the
estimators would leave the script unable to run (it stops on a missing text)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
mutation_check = importlib.util.module_from_spec(_spec)
sys.modules["mutation_check"] = mutation_check  # its dataclasses look their module up there
_spec.loader.exec_module(mutation_check)


@pytest.mark.parametrize("m", mutation_check.MUTATIONS, ids=lambda m: m.name)
def test_each_mutation_finds_its_line_once(m):
    text = (ROOT / m.target).read_text()
    assert text.count(m.old) == 1, f"{m.name}: {text.count(m.old)} occurrences in {m.target}"
    assert m.new != m.old


def test_mutate_changes_only_the_scratch_copy(tmp_path):
    m = mutation_check.MUTATIONS[0]
    (tmp_path / m.target).parent.mkdir(parents=True)
    (tmp_path / m.target).write_text((ROOT / m.target).read_text())
    mutation_check.mutate(tmp_path, m)
    assert m.new in (tmp_path / m.target).read_text()
    assert m.new not in (ROOT / m.target).read_text()
