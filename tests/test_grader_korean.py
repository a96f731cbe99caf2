"""The grader in Korean (issue 11, item 5): catalogues, the language switch, and every wrong answer of the
catalogue diagnosed alike in both languages and answered fully in Korean.

``attnbook/locales/ko/engine.po`` holds the engine's messages, ``tasks.po`` the tasks' own (misconceptions,
properties, hints, titles, case names and notes). The catalogue test fails for a task's message until
``tasks.po`` translates it: that is its purpose.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import nbformat
import pytest
from babel.messages.pofile import read_po
from test_catalogues import CASES

import attnbook
from attnbook import i18n
from attnbook.grading import get_task, run_task
from conftest import ROOT

LOCALES = ROOT / "attnbook" / "locales" / "ko"
CATALOGUES = sorted(LOCALES.glob("*.po"))
HANGUL = re.compile(r"[\uac00-\ud7a3]")
#: a placeholder, maybe closed by a quote or backtick, then a particle whose form depends on the word (after a
#: closing bracket the particle belongs to the word before the brackets: "답({got})이" is fixed)
PARTICLE = re.compile(r"\{[A-Za-z_]\w*\}[`'\"]?(은|는|이|가|을|를|과|와|으로|로)(?![\uac00-\ud7a3])")


def _entries():
    found = []
    for path in CATALOGUES:
        with open(path, "rb") as handle:
            for message in read_po(handle):
                if message.id:
                    found.append((path.name, message.id, message.string))
    return found


ENTRIES = _entries()


@pytest.fixture
def korean():
    with i18n.using("ko"):
        i18n.untranslated(clear=True)
        yield
        i18n.untranslated(clear=True)


def test_the_engine_catalogue_exists_and_is_complete():
    assert (LOCALES / "engine.po").exists()
    engine = [e for e in ENTRIES if e[0] == "engine.po"]
    assert len(engine) > 200
    assert all(string for _, _, string in engine), [m for _, m, s in engine if not s][:5]


@pytest.mark.parametrize("name, msgid, msgstr", ENTRIES, ids=[f"{e[0]}:{i}" for i, e in enumerate(ENTRIES)])
def test_msgid_and_msgstr_have_the_same_placeholders(name, msgid, msgstr):
    if msgstr:
        assert i18n.placeholders(msgid) == i18n.placeholders(msgstr), (msgid, msgstr)


def test_no_placeholder_stands_before_a_particle_that_depends_on_the_word():
    bad = [(name, s) for name, _, s in ENTRIES if s and PARTICLE.search(s)]
    assert not bad, bad[:10]


def test_the_particle_check_can_fail():
    assert PARTICLE.search("{name}를 확인하세요") and PARTICLE.search("`{name}`이 없습니다")
    assert PARTICLE.search("{a}로 나눕니다")
    assert not PARTICLE.search("`{name}` 함수를 확인하세요") and not PARTICLE.search("{n}개입니다")


def test_templates_capture_and_translate_nested_messages(korean):
    text = (
        "`f` raised ZeroDivisionError at line 3: a division by zero: an empty group (a length of 0, an empty "
        "bucket, no key left) reached a division. Seen on case 'T=0'."
    )
    done = i18n.translate(text)
    assert done.startswith(
        "`f` 함수의 3번째 줄에서 ZeroDivisionError 예외가 발생했습니다: 0으로 나누었습니다"
    ), done
    assert done.endswith("케이스 'T=0'에서 확인했습니다."), done
    assert i18n.untranslated() == []
    # an explanation that begins with a placeholder does not swallow the engine's sentence around it
    text = (
        "`f` raised RuntimeError at line 2 (`x = a + b`): float64 and float32 tensors meet in one operation: "
        "a tensor you created (torch.tensor, torch.zeros, torch.ones, torch.arange, ...) gets float32 by "
        "default, while the grader's inputs are float64. Seen on case 'B=2'."
    )
    done = i18n.translate(text)
    assert done.startswith(
        "`f` 함수의 2번째 줄(`x = a + b`)에서 RuntimeError 예외가 발생했습니다: 한 연산에서 dtype "
        "float64 텐서와"
    ), done
    assert done.endswith("케이스 'B=2'에서 확인했습니다.") and i18n.untranslated() == [], done
    assert (
        i18n.translate("something nobody wrote in any catalogue") == "something nobody wrote in any catalogue"
    )
    assert i18n.untranslated() == ["something nobody wrote in any catalogue"]


def test_english_is_unchanged_and_nothing_is_recorded():
    with i18n.using("en"):
        i18n.untranslated(clear=True)
        assert i18n.translate("passed 3 cases, 1/1 point") == "passed 3 cases, 1/1 point"
        assert i18n.untranslated() == []


def test_set_language_and_the_environment_variable(monkeypatch):
    previous = i18n._CHOSEN[0]
    try:
        attnbook.set_language(None)
        monkeypatch.delenv("ATTNBOOK_LANG", raising=False)
        assert attnbook.get_language() == "en"
        monkeypatch.setenv("ATTNBOOK_LANG", "ko_KR.UTF-8")
        assert attnbook.get_language() == "ko"
        monkeypatch.setenv("ATTNBOOK_LANG", "xx")
        assert attnbook.get_language() == "en"
        attnbook.set_language("ko")
        assert attnbook.get_language() == "ko"
        task = get_task("04.dot_scores")
        result = run_task(task, lambda s_t, H: H.sum(1))
        assert HANGUL.search(result.message) and HANGUL.search(result.title), result
        attnbook.set_language("en")
        assert run_task(task, None).message == "not attempted yet: write the function, then run this cell."
        with pytest.raises(ValueError):
            attnbook.set_language("fr")
    finally:
        i18n._CHOSEN[0] = previous
    env = dict(os.environ, ATTNBOOK_LANG="ko")
    code = (
        "from attnbook.grading import get_task, run_task; "
        "print(run_task(get_task('04.dot_scores'), None).message)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "아직 풀지 않았습니다: 함수를 작성한 다음 이 셀을 실행하세요.", out.stderr[
        -2000:
    ]


def test_check_hint_and_progress_speak_korean(korean, capsys):
    from attnbook.grading import notebook

    notebook._SESSION.clear()
    wrong = lambda s_t, H: H.sum(1)  # noqa: E731
    for _ in range(2):
        with pytest.raises(notebook.CheckFailed) as failure:
            notebook.check("04.dot_scores", wrong)
    # the same mistake twice: the next hint tier, or (the last tier is only given when asked for) how to ask
    message = str(failure.value)
    assert HANGUL.search(message) and ("힌트: " in message or "를 실행하면 힌트가 나옵니다" in message), (
        message
    )
    notebook.hint("04.dot_scores")
    notebook.progress("04")
    out = capsys.readouterr().out
    assert "합계: 0/" in out and "힌트" in out, out
    assert i18n.untranslated() == [], i18n.untranslated()
    notebook._SESSION.clear()


@pytest.mark.parametrize("task_id, name, fn, diagnosis, phrase", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_every_wrong_answer_gets_the_same_diagnosis_and_a_korean_message(
    task_id, name, fn, diagnosis, phrase
):
    task = get_task(task_id)
    with i18n.using("en"):
        english = run_task(task, fn)
    with i18n.using("ko"):
        i18n.untranslated(clear=True)
        korean = run_task(task, fn)
        missing = i18n.untranslated(clear=True)
    assert (korean.status, korean.diagnosis, korean.points) == (
        english.status,
        english.diagnosis,
        english.points,
    )
    assert HANGUL.search(korean.message), korean.message
    assert not missing, f"not translated: {missing}\nmessage: {korean.message}"
    # the case is named once, at the end, as in English (a template that swallowed it would put it inside)
    if " Seen on case " in english.message:
        assert korean.message.count("에서 확인했습니다.") == 1, korean.message
        assert korean.message.endswith("에서 확인했습니다."), korean.message
    assert "Seen on" not in korean.message, korean.message


@pytest.mark.slow
def test_attnbook_grade_answers_a_korean_notebook_in_korean(tmp_path):
    exercise = nbformat.read(ROOT / "exercises" / "04_attention_scores.ipynb", as_version=4)
    for cell in exercise.cells:
        if "def dot_scores(" in cell.source:
            cell.source = cell.source.replace("raise NotImplementedError()", "return H.sum(1)")
    exercise.metadata.setdefault("attnbook", {})["language"] = "ko"
    path = tmp_path / "04_attention_scores.ipynb"
    nbformat.write(exercise, path)
    out = tmp_path / "grades"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "attnbook.grading.cli",
            "--task",
            "04.dot_scores",
            "--task",
            "04.dot_scores_batch",
            "--out",
            str(out),
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "채점 결과" in run.stdout and "합계: 0/" in run.stdout, run.stdout
    assert "아직 풀지 않았습니다" in run.stdout, run.stdout
    feedback = (out / "feedback" / "04_attention_scores.txt").read_text(encoding="utf-8")
    assert "채점 결과" in feedback
    report = json.loads((out / "grades.json").read_text(encoding="utf-8"))[0]
    assert report["language"] == "ko"
    assert report["tasks"][0]["diagnosis"] == "ignores_query" and HANGUL.search(report["tasks"][0]["message"])
    # the same English notebook, --lang ko: Korean; without it: English, byte for byte as before
    english = tmp_path / "en" / "04_attention_scores.ipynb"
    english.parent.mkdir()
    shutil.copy(ROOT / "exercises" / "04_attention_scores.ipynb", english)
    asked = subprocess.run(
        [
            sys.executable,
            "-m",
            "attnbook.grading.cli",
            "--lang",
            "ko",
            "--task",
            "04.dot_scores",
            str(english),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert asked.returncode == 0 and "아직 풀지 않았습니다" in asked.stdout, (
        asked.stdout + asked.stderr[-2000:]
    )
    plain = subprocess.run(
        [sys.executable, "-m", "attnbook.grading.cli", "--task", "04.dot_scores", str(english)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "ATTNBOOK_LANG"},
    )
    assert plain.returncode == 0 and "Grade report for" in plain.stdout and not HANGUL.search(plain.stdout)


def test_a_generated_korean_exercise_sets_the_language():
    pytest.importorskip("yaml")
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import i18n as tool  # tools/i18n.py
    finally:
        sys.path.pop(0)
    page = ROOT / "solutions" / "04_attention_scores.ipynb"
    _, text = tool.korean_page(page)
    for nb in (nbformat.reads(text, as_version=4),):
        assert nb.metadata["attnbook"]["language"] == "ko"
        setup = next(c for c in nb.cells if c.cell_type == "code" and "from attnbook.grading" in c.source)
        assert setup.source.startswith('import attnbook; attnbook.set_language("ko")\n'), setup.source


def test_tasks_catalogue_holds_exactly_the_task_messages():
    """An edited or new message in a task file cannot go untranslated unnoticed."""
    import subprocess
    import sys

    from conftest import ROOT

    out = subprocess.run(
        [sys.executable, "tools/extract_grader_messages.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_korean_setup_cell_fails_with_a_korean_sentence():
    """The hidden setup cell of a Korean notebook runs the same code; if installing the package fails, a
    Korean reader is told what to do in Korean."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import setup_cell
    finally:
        sys.path.pop(0)
    for path in sorted((ROOT / "ko" / "chapters").glob("*.ipynb")) + sorted(
        (ROOT / "ko" / "exercises").glob("*.ipynb")
    ):
        nb = nbformat.read(path, as_version=4)
        cell = setup_cell.setup_cell(nb)
        english = setup_cell.setup_cell(nbformat.read(ROOT / path.relative_to(ROOT / "ko"), as_version=4))
        assert cell is not None and english is not None, path
        assert setup_cell.MESSAGE_KO in cell.source and setup_cell.MESSAGE not in cell.source, path
        assert cell.source == english.source.replace(setup_cell.MESSAGE, setup_cell.MESSAGE_KO), path
        compile(cell.source, str(path), "exec")  # still Python
