"""Run the learner batch once and summarise it for the red-team report.

    cd /work/main && PYTHONPATH=tests OMP_NUM_THREADS=1 .venv/bin/python -m learner_batch.report out.json

Prints, per set: wrong answers that pass, rejections whose diagnosis is generic, valid answers rejected, and
the rates; writes every result (task, name, mistake, passed, diagnosis, message) to ``out.json``.
"""

import importlib
import json
import sys
import warnings
from collections import defaultdict
from types import SimpleNamespace

from attnbook.grading import get_task, run_task

from . import SETS
from .judge import names_the_mistake


def run() -> list[dict]:
    rows = []
    modules = [importlib.import_module(f"learner_batch.set_{s}") for s in SETS]
    extra = getattr(importlib.import_module("learner_batch"), "EXTRA", [])
    modules += [importlib.import_module(f"learner_batch.{name}") for name in extra]
    for module in modules:
        for kind, items in (("WRONG", module.WRONG), ("VALID", module.VALID)):
            for item in items:
                s = item["task"].split(".")[0]
                try:
                    task = get_task(item["task"])
                except KeyError:
                    rows.append(
                        dict(
                            set=s,
                            kind=kind,
                            task=item["task"],
                            name=item["name"],
                            passed=False,
                            diagnosis="TASK_MISSING",
                            named=False,
                            mistake="",
                            cls="",
                            message="",
                        )
                    )
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        result = run_task(task, item["fn"])
                except Exception as exc:  # a grader that crashes is a finding too
                    result = SimpleNamespace(passed=False, diagnosis="GRADER_CRASH", message=repr(exc)[:300])
                rows.append(
                    dict(
                        set=s,
                        kind=kind,
                        task=item["task"],
                        name=item["name"],
                        mistake=item.get("mistake", ""),
                        cls=item.get("cls", ""),
                        passed=result.passed,
                        diagnosis=result.diagnosis,
                        named=kind == "WRONG" and names_the_mistake(result),
                        message=result.message,
                    )
                )
    return rows


def summary(rows: list[dict]) -> str:
    lines = []
    totals = defaultdict(int)
    for s in SETS:
        wrong = [r for r in rows if r["set"] == s and r["kind"] == "WRONG"]
        valid = [r for r in rows if r["set"] == s and r["kind"] == "VALID"]
        rejected = sum(not r["passed"] for r in wrong)
        named = sum(r["named"] for r in wrong)
        valid_rejected = [r for r in valid if not r["passed"]]
        totals["wrong"] += len(wrong)
        totals["rejected"] += rejected
        totals["named"] += named
        totals["valid"] += len(valid)
        totals["valid_rejected"] += len(valid_rejected)
        lines.append(
            f"set {s}: rejected {rejected}/{len(wrong)} ({rejected / len(wrong):.1%}), "
            f"named {named}/{len(wrong)} ({named / len(wrong):.1%}), "
            f"named among rejections {named}/{rejected}, valid rejected {len(valid_rejected)}/{len(valid)}"
        )
        for r in wrong:
            if r["passed"]:
                lines.append(f"  PASSES  {r['task']} {r['name']}: {r['mistake']} [{r['cls']}]")
        for r in wrong:
            if not r["passed"] and not r["named"]:
                lines.append(f"  GENERIC {r['task']} {r['name']} ({r['diagnosis']}): {r['message'][:160]}")
        for r in valid_rejected:
            lines.append(f"  VALID-REJECTED {r['task']} {r['name']} ({r['diagnosis']}): {r['message'][:200]}")
    w, rj, n = totals["wrong"], totals["rejected"], totals["named"]
    lines.append(
        f"overall: rejected {rj}/{w} ({rj / w:.1%}), named {n}/{w} ({n / w:.1%}), "
        f"named among rejections {n}/{rj} ({n / max(rj, 1):.1%}), "
        f"valid rejected {totals['valid_rejected']}/{totals['valid']}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    rows = run()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(rows, f, indent=1, ensure_ascii=False)
    print(summary(rows))
