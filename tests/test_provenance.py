"""workbench.provenance: the CPU and the commit a run's params.json records."""

import re

from workbench import provenance


def test_the_cpu_is_named():
    assert provenance.cpu_model().strip()


def test_the_commit_is_the_checkout_s_with_its_changes_marked_or_none(tmp_path, monkeypatch):
    commit = provenance.git_commit()
    # In a clone: the commit, "+changes" when tracked files differ; in a downloaded copy: None.
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(\+changes)?", commit), commit
    monkeypatch.setattr(provenance, "REPO", tmp_path)  # a folder that is no git checkout
    assert provenance.git_commit() is None
