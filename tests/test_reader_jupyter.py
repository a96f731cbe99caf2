"""A learner's path, followed literally: the README's commands, in a clean clone of the repository.

The clone shares this checkout's `.venv` (a symlink), so `make venv` there finds the same content stamp
and installs nothing: the test needs no network. The commands are read from the README's code blocks,
so if the README changes, the test follows.
"""

from __future__ import annotations

import re
import shlex
import subprocess

import nbformat
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def readme_commands(heading: str) -> list[str]:
    """The shell lines of the code blocks under ``## heading`` in the README (comments stripped)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                lines.append(line)
    return lines


def run(command: str, cwd) -> str:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        f"`{command}` failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    target = tmp_path_factory.mktemp("reader") / "book"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


def test_run_a_chapter_as_the_readme_says(clone):
    commands = readme_commands("Run a chapter")
    assert any("jupyter execute" in c for c in commands) and "make venv" in commands
    for command in commands:
        if "jupyter lab" in command:  # interactive: the next command is its non-interactive twin
            assert (clone / shlex.split(command)[-1]).exists(), (
                f"the README names a missing notebook: {command}"
            )
            continue
        run(command, clone)


def test_do_and_grade_an_exercise_as_the_readme_says(clone):
    commands = [c for c in readme_commands("Do and grade the exercises") if "--json" not in c]
    outputs = [run(c, clone) for c in commands]
    report = outputs[-1]
    assert "Grade report" in report and re.search(r"Total: 0/\d+", report), report
    assert report.count("not attempted yet") >= 3

    # The learner now writes the answers: put the reference code into their copy, cell by cell.
    grade_command = next(c for c in commands if "attnbook-grade" in c)
    mine = clone / shlex.split(grade_command)[-1]
    solution = nbformat.read(ROOT / "solutions" / mine.name, as_version=4)
    answers = {c.id: c.source for c in solution.cells if "### BEGIN SOLUTION" in c.source}
    work = nbformat.read(mine, as_version=4)
    filled = 0
    for cell in work.cells:
        if cell.id in answers:
            cell.source = re.sub(r"(?m)^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", "", answers[cell.id])
            filled += 1
    assert filled == len(answers) > 0
    nbformat.write(work, mine)
    report = run(grade_command, clone)
    total = re.search(r"Total: (\d+)/(\d+)", report)
    assert total and total.group(1) == total.group(2), report
    assert "not attempted" not in report and "failed" not in report
