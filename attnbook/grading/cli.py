"""``attnbook-grade``: grade exercise notebooks the way an instructor can trust.

    attnbook-grade my_work/08_attention_matrix_form.ipynb            # report of points per task
    attnbook-grade --task 08.sdpa my_work/08_attention_matrix_form.ipynb   # one task, quickly
    attnbook-grade -j 2 --set 08 --out grades/ submissions/*/08_*.ipynb    # a class

The tasks and their points come from the released exercise set (``exercises/``), never from the
submission: a deleted graded cell grades 0, an edited one is replaced by the released one, a graded cell
of another set is ignored. The learner's cells run in a sandbox (bubblewrap where available: no
network, a private working folder, everything else read-only, time and memory limits); every verdict is
computed in the grader's own process. The notebook file is only read, never changed.

Marks: ✔ passed, ✘ failed, … not attempted yet, ? not run (its graded cell was never reached).

With ``--out DIR``: ``DIR/grades.json`` (every report), ``DIR/gradebook.csv`` (one row per learner, one
column per task, the total) and ``DIR/feedback/<learner>.txt`` (each task's message).

Exit status: 0 when every notebook was graded (whatever the score); 2 when a notebook could not be
graded (missing, unreadable, not an exercise notebook, the wrong set, an unknown task) or the command
line is wrong; 4 with ``--require-isolation`` when bubblewrap does not work here.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import multiprocessing
import os
import re
import sys
from pathlib import Path

from .. import i18n
from .engine import FAILED, NOT_ATTEMPTED, PASSED

NOT_RUN = "not run"
MARKS = {PASSED: "✔", FAILED: "✘", NOT_ATTEMPTED: "…", NOT_RUN: "?"}
ASCII_MARKS = {PASSED: "ok", FAILED: "X", NOT_ATTEMPTED: "..", NOT_RUN: "?"}
CHECK_CALL = re.compile(r"""\bcheck\(\s*["']([\w.]+)["']""")


def graded_task_ids(nb) -> list[str]:
    """Task ids called by ``check(...)`` in the notebook's code cells, in order, without repeats."""
    ids: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            for task_id in CHECK_CALL.findall(cell.source):
                if task_id not in ids:
                    ids.append(task_id)
    return ids


def _limits(cell_timeout: float = 60.0, memory_mb: int = 3072, notebook_timeout: float = 300.0):
    from .sandbox import Limits

    return Limits(
        cell_timeout=cell_timeout,
        memory_mb=memory_mb,
        cpu_s=int(max(300, 10 * cell_timeout)),
        notebook_timeout=notebook_timeout,
    )


def grade_notebook(
    path: Path,
    cell_timeout: float = 60.0,
    *,
    only=None,
    set_id: str | None = None,
    release_dir: str | None = None,
    memory_mb: int = 3072,
    pool=None,
    prefetch: bool = False,
    notebook_timeout: float = 300.0,
    language: str | None = None,
) -> dict:
    """Grade one notebook on the trusted path; ``{"notebook", "set", "tasks", "points", "max_points", ...}``.

    Raises :class:`attnbook.grading.trusted.NotGradable` with a one-line reason when it cannot."""
    from . import trusted

    return trusted.grade(
        Path(path),
        release_dir=release_dir,
        set_id=set_id,
        only=only,
        limits=_limits(cell_timeout, memory_mb, notebook_timeout),
        pool=pool,
        prefetch=prefetch,
        language=language,
    )


def _marks() -> dict:
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        "✔✘…".encode(encoding)
        return MARKS
    except (UnicodeEncodeError, LookupError):
        return ASCII_MARKS


def format_report(report: dict) -> str:
    """The report as text, in the report's language (``report["language"]``; English without it)."""
    with i18n.using(report.get("language") or "en"):
        return _format_report(report)


def _format_report(report: dict) -> str:
    translate = i18n.translate
    marks = _marks()
    head = f"Grade report for {report['notebook']}"
    if report.get("set"):
        head += f" (exercise set {report['set']})"
    lines = [translate(head)]
    width = max([len(t["task"]) for t in report["tasks"]] + [4])
    for t in report["tasks"]:
        mark = marks.get(t["status"], "!")
        detail = t["message"]
        if t["status"] == NOT_RUN:
            detail = translate(f"not run: {detail}")
        lines.append(f"  {mark} {t['task']:<{width}}  {t['points']}/{t['max_points']}  {detail}")
    for stopped in report.get("stopped_cells", []):
        lines.append(
            "  "
            + translate(
                f"(cell {stopped['cell'] + 1} of the notebook {stopped['detail']}; it was "
                "skipped and the cells after it ran without it)"
            )
        )
    lines.append(translate(f"Total: {report['points']}/{report['max_points']}"))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# A class at a time
# --------------------------------------------------------------------------------------------------

_WORKER: dict = {}


def _worker_init(options: dict) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from .registry import all_tasks
    from .sandbox import Pool

    all_tasks()
    _WORKER["pool"] = Pool(
        _limits(options["cell_timeout"], options["memory_mb"], options["notebook_timeout"]), spare=1
    )
    _WORKER["options"] = options


def _grade_job(path: str, prefetch: bool):
    from .trusted import NotGradable

    options = _WORKER["options"]
    try:
        return "ok", grade_notebook(
            Path(path),
            options["cell_timeout"],
            only=options["only"],
            set_id=options["set_id"],
            release_dir=options["release_dir"],
            memory_mb=options["memory_mb"],
            pool=_WORKER["pool"],
            prefetch=prefetch,
            notebook_timeout=options["notebook_timeout"],
            language=options["language"],
        )
    except NotGradable as exc:
        return "error", str(exc)
    except Exception as exc:  # never a traceback: one line that says what failed
        return "error", f"cannot grade {path}: {type(exc).__name__}: {str(exc).strip()[:200]}"


def grade_many(
    paths: list[Path], jobs: int = 1, prefetch: bool = True, **options
) -> list[tuple[str, object]]:
    """``[("ok", report) or ("error", reason), ...]`` in the order of ``paths``; ``jobs`` processes.

    ``prefetch``: start the next submission's sandbox (and its torch import) while this one is graded;
    each sandbox still serves one submission only."""
    options = {
        "cell_timeout": 60.0,
        "memory_mb": 3072,
        "only": None,
        "set_id": None,
        "release_dir": None,
        "notebook_timeout": 300.0,
        "language": None,
        **options,
    }
    if jobs <= 1:
        _worker_init(options)
        try:
            return [_grade_job(str(p), prefetch=prefetch and i < len(paths) - 1) for i, p in enumerate(paths)]
        finally:
            _WORKER["pool"].close()
    results: list = [None] * len(paths)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_worker_init, initargs=(options,)
    ) as executor:
        futures = {}
        for i, p in enumerate(paths):
            futures[executor.submit(_grade_job, str(p), prefetch and len(paths) - i > jobs)] = i
        for future, i in futures.items():
            try:
                results[i] = future.result()
            except Exception as exc:  # a worker that died
                results[i] = (
                    "error",
                    f"cannot grade {paths[i]}: the grading process failed ({type(exc).__name__})",
                )
    return results


def learner_ids(paths: list[Path]) -> list[str]:
    """The learner of each notebook. With one folder per learner (``submissions/<learner>/08_x.ipynb``,
    whatever each file is called), the folder's name; with every notebook in one folder, the file name
    without ``.ipynb``. Two folders of the same name in different places (``a/ana``, ``b/ana``) are told
    apart by their path, so two learners never share a row."""
    parents = [p.resolve().parent for p in paths]
    if len(set(parents)) <= 1:
        return [p.stem for p in paths]
    names: dict[str, set] = {}
    for parent in parents:
        names.setdefault(parent.name, set()).add(parent)
    common = Path(os.path.commonpath([str(q) for q in parents]))
    return [
        parent.name if len(names[parent.name]) == 1 else str(parent.relative_to(common)) for parent in parents
    ]


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "learner"


def _csv_text(value):
    """A text cell a spreadsheet will not run as a formula (a learner's folder named ``=HYPERLINK(...)``)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _set_max_points(path: Path, set_id: str | None, release_dir: str | None) -> int:
    """The maximum of the set a notebook that could not be graded was meant to be (``--set``, else its file
    name), so that its row still says "0 of 8"; 0 when that is unknown."""
    from .trusted import SET_PREFIX, NotGradable, releases

    match = SET_PREFIX.match(path.name)
    sid = set_id or (match.group(1) if match else None)
    try:
        release = releases(release_dir).get(sid) if sid else None
        return release.max_points if release is not None else 0
    except (NotGradable, KeyError):
        return 0


def write_outputs(
    out: Path,
    paths: list[Path],
    outcomes: list[tuple[str, object]],
    *,
    set_id: str | None = None,
    release_dir: str | None = None,
    language: str | None = None,
) -> None:
    """``grades.json``, ``gradebook.csv`` and ``feedback/<learner>.txt`` under ``out``.

    One row per learner: the notebooks of different sets of a learner share it; a second notebook with
    the same tasks (a re-upload) gets a row of its own, named after its file, so nothing is added twice.
    A notebook that could not be graded scores 0 out of its set's maximum, with the reason in ``notes``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "feedback").mkdir(exist_ok=True)
    learners = learner_ids(paths)
    reports = []
    columns: list[str] = []
    rows: dict[str, dict] = {}
    feedback: dict[str, list[str]] = {}
    for learner, path, (kind, value) in zip(learners, paths, outcomes):
        row = rows.setdefault(learner, {"learner": learner, "total": 0, "max_points": 0, "notes": ""})
        tasks = [t["task"] for t in value["tasks"]] if kind == "ok" else [f"notebook:{path.name}"]
        if any(t in row.get("_seen", ()) for t in tasks):  # the same tasks twice for one learner
            learner = f"{learner} ({path.name})"
            row = rows.setdefault(learner, {"learner": learner, "total": 0, "max_points": 0, "notes": ""})
        row.setdefault("_seen", set()).update(tasks)
        if kind == "ok":
            report = dict(value, learner=learner)
            reports.append(report)
            for t in report["tasks"]:
                if t["task"] not in columns:
                    columns.append(t["task"])
                row[t["task"]] = t["points"]
            row["total"] += report["points"]
            row["max_points"] += report["max_points"]
            feedback.setdefault(learner, []).append(format_report(report))
        else:
            reports.append({"notebook": str(path), "learner": learner, "error": value})
            row["max_points"] += _set_max_points(path, set_id, release_dir)
            row["notes"] = (row["notes"] + "; " if row["notes"] else "") + str(value)
            with i18n.using(language):  # the notebook could not be read: the language asked for, if any
                feedback.setdefault(learner, []).append(
                    i18n.translate(f"{path}: could not be graded: {value}")
                )
    (out / "grades.json").write_text(
        json.dumps(reports, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    with open(out / "gradebook.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, ["learner", *columns, "total", "max_points", "notes"], restval="", extrasaction="ignore"
        )
        writer.writeheader()
        for row in rows.values():
            writer.writerow({k: _csv_text(v) for k, v in row.items()})
    used: set[str] = set()
    for learner, texts in feedback.items():
        name = _safe(learner)
        while name.lower() in used:  # "a b" and "a_b", or names equal but for case
            name += "_"
        used.add(name.lower())
        (out / "feedback" / f"{name}.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")


def mixed_sets_warning(reports: list[dict], set_id: str | None) -> str:
    """A warning when, without ``--set``, the notebooks were graded as different sets: each notebook's set
    is then recognised from its own cells, so a learner who hands in another set's notebook is graded on
    that set's tasks, and the gradebook's columns and maxima differ between learners."""
    sets = sorted({r.get("set") for r in reports if r.get("set")})
    if set_id is None and len(sets) > 1:
        return (
            f"the notebooks were graded as {len(sets)} different exercise sets ({', '.join(sets)}); "
            "pass --set NN to grade every notebook against one set"
        )
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="attnbook-grade", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--json", action="store_true", help="print a JSON list of reports")
    parser.add_argument(
        "--task",
        action="append",
        metavar="ID",
        help="grade only this task (e.g. 08.sdpa); repeat for several",
    )
    parser.add_argument("--set", dest="set_id", metavar="NN", help="the exercise set every notebook must be")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="notebooks graded in parallel (default 1)")
    parser.add_argument("--out", type=Path, help="write grades.json, gradebook.csv and feedback/ here")
    parser.add_argument(
        "--cell-timeout",
        type=float,
        default=60.0,
        help="seconds a learner's cell may run before its sandbox is destroyed (default 60)",
    )
    parser.add_argument(
        "--notebook-timeout",
        type=float,
        default=300.0,
        help="seconds one notebook may take in all, restarts and checks included; the rest of "
        "it is then reported as not run (default 300)",
    )
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=3072,
        help="address-space limit of a learner's kernel in MB (default 3072; torch needs ~600)",
    )
    parser.add_argument("--release", help="folder of the released exercise notebooks (default: exercises/)")
    parser.add_argument(
        "--lang",
        choices=i18n.LANGUAGES,
        default=None,
        help="language of the report and feedback (default: each notebook's own, "
        "metadata.attnbook.language, else ATTNBOOK_LANG, else en)",
    )
    parser.add_argument(
        "--require-isolation",
        action="store_true",
        help="refuse to grade (exit 4) unless bubblewrap isolates the learner's code",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.cell_timeout <= 0 or args.notebook_timeout <= 0 or args.memory_mb < 768:
        parser.error(
            "--jobs must be at least 1, --cell-timeout and --notebook-timeout positive, --memory-mb at "
            "least 768 (importing torch needs between 512 and 768 MB of address space)"
        )

    from .sandbox import WARNINGS, backend

    kind = backend()
    if kind != "bwrap":
        if args.require_isolation:
            print(f"attnbook-grade: {WARNINGS[kind]}", file=sys.stderr)
            return 4
        print(f"attnbook-grade: warning: {WARNINGS[kind]}", file=sys.stderr)
    only = set(args.task) if args.task else None
    outcomes = grade_many(
        args.notebooks,
        args.jobs,
        cell_timeout=args.cell_timeout,
        memory_mb=args.memory_mb,
        only=only,
        set_id=args.set_id,
        release_dir=args.release,
        notebook_timeout=args.notebook_timeout,
        language=args.lang,
    )
    status = 0
    reports = []
    for kind_, value in outcomes:
        if kind_ == "ok":
            reports.append(value)
        else:
            print(f"attnbook-grade: {value}", file=sys.stderr)
            status = 2
    mixed = mixed_sets_warning(reports, args.set_id)
    if mixed:
        print(f"attnbook-grade: warning: {mixed}", file=sys.stderr)
    if args.out:
        write_outputs(
            args.out,
            args.notebooks,
            outcomes,
            set_id=args.set_id,
            release_dir=args.release,
            language=args.lang,
        )
    if args.json:
        print(json.dumps(reports, ensure_ascii=False, indent=1))
    elif reports:
        print("\n\n".join(format_report(r) for r in reports))
    return status


if __name__ == "__main__":
    sys.exit(main())
