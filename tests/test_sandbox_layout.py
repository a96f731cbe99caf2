"""The sandbox's mount order: what the learner's kernel needs stays visible wherever the book lives."""

from __future__ import annotations

import shutil

import pytest

from attnbook.grading import sandbox


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_the_private_tmp_is_mounted_before_the_interpreter_and_package_are_bound():
    """A checkout under /tmp (as CI may make) must not be hidden by the sandbox's own /tmp."""
    cmd = sandbox._bwrap_command(sandbox.Limits())
    tmp = next(i for i in range(len(cmd) - 1) if cmd[i] == "--tmpfs" and cmd[i + 1] == "/tmp")
    binds = [
        i for i in range(len(cmd) - 2) if cmd[i] == "--ro-bind" and cmd[i + 1] == str(sandbox.PACKAGE_DIR)
    ]
    assert binds and all(i > tmp for i in binds)
    python = [
        i for i, part in enumerate(cmd) if part == "--ro-bind" and cmd[i + 1] in sandbox._python_paths()
    ]
    assert all(i > tmp for i in python)
