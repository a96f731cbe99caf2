"""Attacks on trusted grading, written as a learner who wants points without the work would write them.

Every attack is a set-08 notebook (3 tasks, 8 points) whose task stubs are left as released, so any point
it earns is a point stolen; the attacks that need a working notebook around them (a hanging cell, a
function that hangs or eats memory) start from the solution and show that the rest is still graded.
All notebooks are graded once, two at a time, by the same code as ``attnbook-grade -j 2``; the tests
then read the reports and the machine. On CI the sandbox must be bubblewrap (``.ci/run`` installs it and
sets ``ATTNBOOK_REQUIRE_SANDBOX=1``); elsewhere the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from attnbook.grading import cli
from attnbook.grading.sandbox import backend
from conftest import ROOT

pytestmark = pytest.mark.slow
EXERCISE = ROOT / "exercises" / "08_attention_matrix_form.ipynb"
SOLUTION = ROOT / "solutions" / "08_attention_matrix_form.ipynb"
CELL_TIMEOUT = 4.0
MARK = f"attnbook-attack-{uuid.uuid4().hex[:10]}"


def _code(source: str):
    return nbformat.v4.new_code_cell(source)


def _index(nb, text: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and text in c.source)


def _after(nb, text: str, source: str) -> None:
    """A new code cell right after the first code cell containing ``text``."""
    nb.cells.insert(_index(nb, text) + 1, _code(source))


def _graded(nb, task_id: str):
    return nb.cells[_index(nb, f'check("{task_id}"')]


# ------------------------------------------------------------------------------------------------
# The attacks
# ------------------------------------------------------------------------------------------------

FORGE = """
import json, os
record = {"task": "08.sdpa", "title": "x", "status": "passed", "message": "passed", "points": 300,
          "max_points": 300, "diagnosis": ""}
for path in [os.environ.get("ATTNBOOK_RESULTS", ""), "/tmp/results.jsonl", "results.jsonl"]:
    try:
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\\n")
    except OSError:
        pass
os.environ["ATTNBOOK_RESULTS"] = "results.jsonl"
print("✔ 08.sdpa (scaled dot-product attention with masks): passed 7 cases, 4/4 points")
"""

PATCH = """
import attnbook.grading as G, attnbook.grading.engine as E, attnbook.grading.notebook as N
def passed(task, fn, **kwargs):
    return E.Result(task.id, task.title, "passed", "passed", task.points, task.points)
E.run_task = G.run_task = N.run_task = passed
E.close = lambda *a, **k: True
E._check_values = E._check_types = lambda *a, **k: None
G.check = N.check = lambda *a, **k: print("✔ passed")
"""

BORROW_REFERENCE = """
from attnbook.grading import get_task
def sdpa(Q, K, V, mask=None):
    return get_task("08.sdpa").reference(Q, K, V, mask)
"""

IMPORT_TASKS = """
import importlib, pkgutil
import attnbook.grading.tasks as T
for info in pkgutil.iter_modules(T.__path__):
    importlib.import_module("attnbook.grading.tasks." + info.name)
from attnbook.grading import all_tasks
REFERENCES = {task_id: task.reference for task_id, task in all_tasks().items()}
def causal_mask(T):
    return REFERENCES["08.causal_mask"](T)
"""

READ_SOLUTIONS = f"""
import json, sys
try:  # the solution notebook
    solution = json.load(open({str(SOLUTION)!r}))
    code = [c["source"] for c in solution["cells"] if "def padding_mask" in "".join(c["source"])]
    exec("".join(code[0]))
except OSError:
    pass
try:  # the right answers of the test catalogue
    sys.path.insert(0, {str(ROOT / "tests")!r})
    from test_catalogue_08 import CORRECT
    padding_mask = CORRECT["08.padding_mask"]
except ImportError:
    pass
"""

ESCAPE = f'''
import os, subprocess, sys
targets = [{str(ROOT / "attnbook" / (MARK + ".py"))!r}, {str(ROOT / MARK)!r},
           {str(Path.home() / MARK)!r}, "/tmp/{MARK}", os.path.join(os.path.dirname(os.getcwd()), "{MARK}"),
           SUBMISSION_DIR + "/{MARK}"]
for target in targets:
    try:
        with open(target, "w") as handle:
            handle.write("written from a learner's cell")
    except OSError:
        pass
try:
    with open(SUBMISSION, "a") as handle:
        handle.write("tampered")
except OSError:
    pass
subprocess.Popen(["sleep", "1000"], start_new_session=True)
subprocess.Popen([sys.executable, "-c", "import os, time\\nif os.fork() == 0:\\n    os.setsid()\\n"
                  "    time.sleep(1000)  # {MARK}"], start_new_session=True)
subprocess.Popen(["sh", "-c", "sleep 1000; : {MARK}"], start_new_session=True)
import socket
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    REACHED = True
except OSError:
    REACHED = False
'''

HANG_IGNORING_SIGNALS = """
import signal
for sig in (signal.SIGINT, signal.SIGALRM, signal.SIGTERM, signal.SIGXCPU):
    signal.signal(sig, signal.SIG_IGN)
signal.setitimer(signal.ITIMER_REAL, 0)
while True:
    pass
"""

HANG_IN_FUNCTION = """
import signal
def sdpa(Q, K, V, mask=None):
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, 0)
    while True:
        pass
"""

EAT_MEMORY = """
_previous_causal_mask = causal_mask
def causal_mask(T):
    hog = torch.empty(2**36, dtype=torch.float64)  # 512 GiB
    return _previous_causal_mask(T)
"""

FORGE_WIRE = """
import json, os, struct
for fd in range(3, 64):
    for reply in ({"re": "run", "ok": True}, {"re": "resolve", "exists": True, "callable": True},
                  {"re": "call", "status": "ok", "out": True}):
        head = json.dumps(reply).encode()
        try:
            os.write(fd, struct.pack("!II", len(head), 0) + head)
        except OSError:
            pass
"""

MACHINE = """
import os, resource
seen = []
for name in ("/dev/" + "x", "/dev/shm/" + "x"):  # /dev: read-only; /dev/shm: capped
    written = 0
    try:
        with open(name, "wb") as handle:
            for _ in range(16):
                handle.write(b"x" * 2**23)
                handle.flush()
                written += 8
    except OSError:
        pass
    seen.append(f"{name}={written}MB")
for k in range(12):  # more files than one file-size limit (64 MB): the total is capped too
    try:
        with open(f"/dev/shm/fill{k}", "wb") as handle:
            handle.write(b"x" * 2**25)
    except OSError:
        break
total = sum(os.path.getsize("/dev/shm/" + f) for f in os.listdir("/dev/shm")) // 2**20
seen.append(f"shm_total={total}MB")
seen.append("nproc=%d/%d" % resource.getrlimit(resource.RLIMIT_NPROC))
OBSERVED = " ".join(seen)
def sdpa(Q, K, V, mask=None):
    raise RuntimeError("OBSERVED " + OBSERVED + " END")
"""

DEEP_FRAME = """
import os, struct, sys
head = b"[" * 300000 + b"]" * 300000  # deeper than any JSON parser's recursion limit
for fd in range(3, 64):
    try:
        os.write(fd, struct.pack("!II", len(head), 0) + head)
    except OSError:
        pass
"""


def _tamper(nb):  # forged result records, a patched engine and check, edited graded cells
    _after(nb, "from attnbook.grading import check", FORGE + PATCH)
    _graded(nb, "08.sdpa").source = 'print("✔ 08.sdpa passed")'
    _graded(nb, "08.causal_mask").metadata["tags"] = []
    _graded(
        nb, "08.causal_mask"
    ).source = 'from attnbook.grading import check\ncheck("08.causal_mask", lambda T: None)'
    nb.cells.append(_code('print("Total: 8/8")'))


def _borrow(nb):  # the grader's references, three ways: one task each
    _after(nb, "def sdpa(", BORROW_REFERENCE)
    _after(nb, "def causal_mask(", IMPORT_TASKS)
    _after(nb, "def padding_mask(", READ_SOLUTIONS)


def _deleted_and_foreign(nb):
    for task_id in ("08.causal_mask", "08.padding_mask"):
        nb.cells.remove(_graded(nb, task_id))
    foreign = _code('check("05.masked_softmax", sdpa)')
    foreign.metadata["tags"] = ["graded"]
    nb.cells.append(foreign)
    nb.cells.append(_code('check("09.split_heads", sdpa)'))


def _escape(nb, path: Path):
    _after(
        nb,
        "from attnbook.grading import check",
        f"SUBMISSION = {str(path)!r}\nSUBMISSION_DIR = {str(path.parent)!r}\n" + ESCAPE,
    )
    _after(
        nb,
        "def causal_mask(",
        "def causal_mask(T):\n    if REACHED:\n        return torch.ones(T, T).tril().bool()\n"
        "    raise NotImplementedError()",
    )


def _hang_cell(nb):
    nb.cells.insert(_index(nb, 'check("08.sdpa"') + 1, _code(HANG_IGNORING_SIGNALS))


def _hang_function_and_memory(nb):
    _after(nb, "def sdpa(", HANG_IN_FUNCTION)
    _after(nb, "def causal_mask(", EAT_MEMORY)
    _after(nb, "def padding_mask(", "too_big = bytearray(2**40)  # a cell beyond the memory limit")


def _forge_wire(nb):
    _after(nb, "from attnbook.grading import check", FORGE_WIRE)


def _machine(nb):  # fill /dev and /dev/shm; read the process limit
    _after(nb, "def sdpa(", MACHINE)


def _deep_frame(nb):  # a message the grader's JSON parser cannot read (RecursionError, not ValueError)
    _after(nb, "from attnbook.grading import check", DEEP_FRAME)


ATTACKS = {
    "tamper": (EXERCISE, _tamper),
    "borrow": (EXERCISE, _borrow),
    "deleted_and_foreign": (SOLUTION, _deleted_and_foreign),
    "escape": (EXERCISE, None),
    "hang_cell": (SOLUTION, _hang_cell),
    "hang_function_and_memory": (SOLUTION, _hang_function_and_memory),
    "forge_wire": (EXERCISE, _forge_wire),
    "machine": (EXERCISE, _machine),
    "deep_frame": (SOLUTION, _deep_frame),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if backend() != "bwrap":
        if os.environ.get("ATTNBOOK_REQUIRE_SANDBOX") == "1":
            pytest.fail(f"bubblewrap does not work here (sandbox: {backend()}) but CI requires it")
        pytest.skip(f"bubblewrap does not work here (sandbox: {backend()})")
    folder = tmp_path_factory.mktemp("submissions")
    paths, before = [], {}
    for name, (base, edit) in ATTACKS.items():
        path = folder / name / base.name
        path.parent.mkdir()
        nb = nbformat.read(base, as_version=4)
        if name == "escape":
            _escape(nb, path)
        else:
            edit(nb)
        nbformat.write(nb, path)
        paths.append(path)
        before[name] = path.read_bytes()
    start = time.perf_counter()
    outcomes = cli.grade_many(paths, jobs=2, cell_timeout=CELL_TIMEOUT)
    seconds = time.perf_counter() - start
    reports = {}
    for name, (kind, value) in zip(ATTACKS, outcomes):
        assert kind == "ok", value
        reports[name] = value
    return {"reports": reports, "paths": dict(zip(ATTACKS, paths)), "before": before, "seconds": seconds}


def _tasks(report) -> dict:
    return {t["task"]: t for t in report["tasks"]}


def test_forged_records_a_patched_engine_or_check_and_edited_graded_cells_earn_nothing(graded):
    report = graded["reports"]["tamper"]
    assert (report["points"], report["max_points"]) == (0, 8), cli.format_report(report)
    assert all(t["status"] == "not attempted yet" for t in report["tasks"]), cli.format_report(report)


def test_borrowed_references_earn_nothing(graded):
    report = graded["reports"]["borrow"]
    tasks = _tasks(report)
    assert (report["points"], report["max_points"]) == (0, 8), cli.format_report(report)
    assert "get_task" in tasks["08.sdpa"]["message"] or "KeyError" in tasks["08.sdpa"]["message"]
    assert tasks["08.causal_mask"]["status"] == "failed"  # the references are not in the sandbox
    assert tasks["08.padding_mask"]["status"] == "not attempted yet"  # solutions/, tests/ cannot be read


def test_deleted_or_foreign_graded_cells_do_not_change_the_maximum(graded):
    report = graded["reports"]["deleted_and_foreign"]
    tasks = _tasks(report)
    assert list(tasks) == ["08.sdpa", "08.causal_mask", "08.padding_mask"]
    assert (report["points"], report["max_points"]) == (4, 8), cli.format_report(report)
    assert (
        tasks["08.causal_mask"]["diagnosis"] == tasks["08.padding_mask"]["diagnosis"] == "graded_cell_missing"
    )


def test_writes_outside_the_working_folder_fail_and_the_submission_is_untouched(graded):
    targets = [
        ROOT / "attnbook" / (MARK + ".py"),
        ROOT / MARK,
        Path.home() / MARK,
        Path("/tmp") / MARK,
        graded["paths"]["escape"].parent / MARK,
    ]
    assert [t for t in targets if t.exists()] == []
    for name, path in graded["paths"].items():
        assert path.read_bytes() == graded["before"][name], f"{name}: the submission was changed"


def test_the_network_cannot_be_reached(graded):
    tasks = _tasks(graded["reports"]["escape"])
    assert tasks["08.causal_mask"]["status"] == "not attempted yet", tasks["08.causal_mask"]["message"]


def test_no_process_outlives_grading(graded):
    survivors = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if MARK in cmdline or cmdline.strip() == "sleep 1000":
            survivors.append((pid, cmdline))
    assert survivors == []


def test_a_cell_that_ignores_signals_is_stopped_and_the_rest_is_graded(graded):
    # the solution with a hanging cell: still full points (the plain solution: test_grade_cli.py)
    report = graded["reports"]["hang_cell"]
    assert (report["points"], report["max_points"]) == (8, 8), cli.format_report(report)
    assert report["isolation"] == "bwrap"
    assert report["timing"]["restarts"] == 1
    assert [c["status"] for c in report["stopped_cells"]] == ["timeout"]
    assert "was stopped after" in cli.format_report(report)
    # the hanging cell cost its limit and one fresh kernel, not more
    assert report["timing"]["learner_cells"] < 3 * CELL_TIMEOUT


def test_a_function_that_cancels_its_alarm_or_eats_memory_fails_only_its_task(graded):
    report = graded["reports"]["hang_function_and_memory"]
    tasks = _tasks(report)
    assert tasks["08.sdpa"]["diagnosis"] == "timeout", tasks["08.sdpa"]["message"]
    assert tasks["08.causal_mask"]["status"] == "failed" and "memory" in tasks["08.causal_mask"]["message"]
    assert tasks["08.padding_mask"]["status"] == "passed", tasks["08.padding_mask"]["message"]


def test_forged_wire_messages_earn_nothing(graded):
    report = graded["reports"]["forge_wire"]
    assert (report["points"], report["max_points"]) == (0, 8), cli.format_report(report)


def test_dev_is_read_only_and_dev_shm_and_processes_are_capped(graded):
    message = _tasks(graded["reports"]["machine"])["08.sdpa"]["message"]
    assert "OBSERVED" in message, message
    text = message.rsplit("OBSERVED ", 1)[1].split(" END")[0]  # the line of code is quoted first
    seen = dict(item.split("=", 1) for item in text.split())
    assert seen["/dev/x"] == "0MB", seen  # bwrap's /dev was a writable tmpfs without any size limit
    assert int(seen["shm_total"][:-2]) <= 64 and int(seen["/dev/shm/x"][:-2]) <= 64, seen
    assert seen["nproc"] == "256/256", seen  # a fork bomb stops there (not for a grader run as root)


def test_a_message_the_grader_cannot_parse_is_a_crash_of_that_cell_not_of_the_grader(graded):
    report = graded["reports"]["deep_frame"]  # the solution, with a cell that writes a 300 000-deep frame
    assert [c["status"] for c in report["stopped_cells"]] == ["crash"], cli.format_report(report)
    assert (report["points"], report["max_points"]) == (8, 8), cli.format_report(report)


def test_a_notebook_of_slow_cells_stops_at_its_budget(tmp_path):
    """Each cell stays under the cell limit; the notebook's wall-clock budget stops the whole."""
    if backend() != "bwrap" and os.environ.get("ATTNBOOK_REQUIRE_SANDBOX") != "1":
        pytest.skip(f"bubblewrap does not work here (sandbox: {backend()})")
    nb = nbformat.read(SOLUTION, as_version=4)
    for _ in range(4):
        nb.cells.insert(_index(nb, "def sdpa(") + 1, _code("import time\ntime.sleep(2)"))
    path = tmp_path / SOLUTION.name
    nbformat.write(nb, path)
    report = cli.grade_notebook(path, cell_timeout=3.0, notebook_timeout=5.0)
    assert [t["status"] for t in report["tasks"]] == ["not run"] * 3, cli.format_report(report)
    assert "budget of 5 s" in report["tasks"][0]["message"], report["tasks"][0]["message"]
    assert report["timing"]["learner_cells"] < 5.0 + 0.5, report["timing"]  # 4 x 2 s without the budget


STOP_READING = """
import time
from attnbook.grading import wire
_receive = wire.Peer.receive
def receive(self, deadline=None):
    self._fill(8, deadline)
    if int.from_bytes(bytes(self.buffer[:4]), "big") > 60000:  # a large message: stop reading it
        time.sleep(10**6)
    return _receive(self, deadline)
wire.Peer.receive = receive
"""


def test_a_kernel_that_stops_reading_cannot_block_the_grader(tmp_path):
    """The wire's deadline covers waiting for a reply, not writing a request: a kernel that stops reading
    left the grader blocked for ever in the write of a large cell (found by hand: 90 s and counting)."""
    if backend() != "bwrap" and os.environ.get("ATTNBOOK_REQUIRE_SANDBOX") != "1":
        pytest.skip(f"bubblewrap does not work here (sandbox: {backend()})")
    nb = nbformat.read(SOLUTION, as_version=4)
    index = _index(nb, "def sdpa(") + 1
    nb.cells.insert(index, _code(STOP_READING))
    nb.cells.insert(
        index + 1, _code("x = 1\n" + "# a long cell\n" * 20000)
    )  # ~300 kB: more than a pipe holds
    path = tmp_path / SOLUTION.name
    nbformat.write(nb, path)
    done: list = []
    worker = threading.Thread(
        target=lambda: done.append(cli.grade_notebook(path, cell_timeout=3.0)), daemon=True
    )
    worker.start()
    worker.join(120)
    assert done, "grading did not end"
    report = done[0]
    assert [c["status"] for c in report["stopped_cells"]] == ["timeout"], cli.format_report(report)
    assert (report["points"], report["max_points"]) == (8, 8), cli.format_report(report)
