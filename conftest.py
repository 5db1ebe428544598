"""Doctests make their folders with ``tempfile``; here those go under the test's own ``tmp_path``, which pytest
prunes, so a test run leaves nothing in the system's temp folder."""
from __future__ import annotations

import tempfile

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_temp_folders_under_tmp_path(request, monkeypatch):
    if isinstance(request.node, DoctestItem):
        monkeypatch.setattr(tempfile, "tempdir", str(request.getfixturevalue("tmp_path")))
