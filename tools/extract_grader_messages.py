"""List the learner-facing messages written in attnbook/grading/tasks/*.py, as translation templates.

Every string literal of a task file that reads as words (titles, hints, misconception messages, property
messages, case names and notes, ...) becomes one message; an f-string becomes a template whose placeholders
are named after the expression they hold (``f"of shape {tuple(w.shape)}"`` -> ``"of shape {shape}"``); implicit
joins and ``+`` concatenations of strings are one message. Docstrings, identifiers (diagnosis keys, task ids),
``"module:qualname"`` patterns and einsum strings are left out.

    .venv/bin/python tools/extract_grader_messages.py            # JSON list: msgid, locations, kind
    .venv/bin/python tools/extract_grader_messages.py --text     # one msgid a line
    .venv/bin/python tools/extract_grader_messages.py --check    # tasks.po holds exactly these, all translated
    .venv/bin/python tools/extract_grader_messages.py --update   # add new messages to tasks.po (untranslated),
                                                                 # drop gone ones, refresh the file:line comments

The Korean catalogue attnbook/locales/ko/tasks.po is keyed by exactly these msgids (tests check it).
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "attnbook" / "grading" / "tasks"

_WORD = re.compile(r"[A-Za-z]{3,}")
_CODEISH = re.compile(r"^[\w.:*\->,\[\]() ]*$")


def _placeholder_name(node: ast.AST) -> str:
    """A readable identifier for the expression inside ``{...}``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "join" and node.args:
            return _placeholder_name(node.args[0])  # ", ".join(map(str, lengths)) -> lengths
        if isinstance(func, ast.Name) and func.id == "map" and node.args:
            return _placeholder_name(node.args[-1])
        if node.args:
            return _placeholder_name(node.args[0])
        return _placeholder_name(node.func)
    if isinstance(node, ast.Subscript):
        return _placeholder_name(node.value)
    if isinstance(node, ast.BinOp):
        return _placeholder_name(node.left)
    if isinstance(node, ast.IfExp):
        return _placeholder_name(node.body)
    return "value"


#: module-level string constants of the file being read (``NAME = "..."``), for ``NAME + "..."`` messages
_CONSTANTS: dict[str, str] = {}
#: names of module-level constants used as ``NAME.format(key=...)`` templates
_FORMAT_TEMPLATES: set[str] = set()


def _text_of(node: ast.AST, names: bool = False) -> str | None:
    """The template of a string expression (constant, f-string, implicit join, ``+`` chain), else None.

    ``names``: resolve a module-level string constant (inside a ``+`` chain)."""
    if names and isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.replace("{", "{{").replace("}", "}}")
    if isinstance(node, ast.JoinedStr):
        out, used = [], {}
        for part in node.values:
            if isinstance(part, ast.Constant):
                out.append(str(part.value).replace("{", "{{").replace("}", "}}"))
            else:
                name = re.sub(r"\W", "_", _placeholder_name(part.value)).strip("_") or "value"
                if name[0].isdigit():
                    name = "v" + name
                used[name] = used.get(name, 0) + 1
                if used[name] > 1:
                    name = f"{name}{used[name]}"
                out.append("{" + name + "}")
        return "".join(out)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text_of(node.left, True), _text_of(node.right, True)
        if (
            left is not None
            and right is not None
            and (_text_of(node.left) is not None or _text_of(node.right) is not None)
        ):
            return _renumber(left + right)
    return None


def _renumber(template: str) -> str:
    """Placeholder names unique within a joined template."""
    seen: dict[str, int] = {}

    def sub(m):
        if m.group(0).startswith("{{"):
            return m.group(0)
        name = re.sub(r"\d+$", "", m.group(1))
        seen[name] = seen.get(name, 0) + 1
        return "{" + (name if seen[name] == 1 else f"{name}{seen[name]}") + "}"

    return re.sub(r"\{\{|\{(\w+)\}", sub, template)


def _is_learner_text(template: str) -> bool:
    plain = re.sub(r"\{\w+\}", "", template)
    if " " not in plain.strip():
        return False  # identifiers, keys, einsum specs, "module:qualname"
    if re.fullmatch(r"[\w.]+:[\w.*]+", plain.strip()):
        return False
    words = [w for w in _WORD.findall(plain) if not re.fullmatch(r"T_[qk]|[A-Z]", w)]
    return bool(words)


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = getattr(node, "body", [])
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, (ast.Constant, ast.JoinedStr))
            ):
                ids.add(id(body[0].value))
    return ids


def _kind(parents: list[ast.AST], node: ast.AST) -> str:
    while len(parents) > 1 and isinstance(parents[-1], ast.IfExp):  # one of two messages: where it goes
        node, parents = parents[-1], parents[:-1]
    parent = parents[-1] if parents else None
    if isinstance(parent, ast.keyword):
        call = parents[-2]
        fn = getattr(call.func, "id", getattr(call.func, "attr", ""))
        return f"{fn}.{parent.arg}"
    if isinstance(parent, ast.Call):
        fn = getattr(parent.func, "id", getattr(parent.func, "attr", ""))
        if node in parent.args:
            return f"{fn}[{parent.args.index(node)}]"
    if isinstance(parent, ast.Return):
        return "return"
    if isinstance(parent, ast.Assign):
        t = parent.targets[0]
        return "assign:" + (getattr(t, "attr", None) or getattr(t, "id", "?"))
    return type(parent).__name__ if parent else "?"


def extract(files=None) -> list[dict]:
    """Every message: ``{"msgid", "locations": [(file, line)], "kinds": [...]}``, in file order."""
    files = files or sorted(p for p in TASKS.glob("*.py") if p.name != "__init__.py")
    found: dict[str, dict] = {}
    for path in files:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        docs = _docstring_nodes(tree)
        _FORMAT_TEMPLATES.clear()
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "format"
                and isinstance(node.func.value, ast.Name)
            ):
                _FORMAT_TEMPLATES.add(node.func.value.id)
        _CONSTANTS.clear()
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                text = _text_of(node.value)
                if text is not None:
                    if node.targets[0].id in _FORMAT_TEMPLATES:  # "... {which} ..." filled by .format()
                        text = text.replace("{{", "{").replace("}}", "}")  # the literal is the template
                    _CONSTANTS[node.targets[0].id] = text
        rel = path.relative_to(ROOT).as_posix()

        def visit(node, parents, docs=docs, rel=rel):
            text = None
            if id(node) not in docs:
                text = _text_of(node)
                if (
                    text is not None
                    and isinstance(parents[-1] if parents else None, ast.Assign)
                    and len(parents) == 2
                    and getattr(parents[-1].targets[0], "id", None) in _CONSTANTS
                ):
                    text = _CONSTANTS[parents[-1].targets[0].id]
            if text is not None and not (
                # the pieces of a "+" chain are one message, taken at the top of the chain
                isinstance(parents[-1] if parents else None, ast.BinOp)
                and _text_of(parents[-1], True) is not None
            ):
                # dictionary keys, Misconception keys, Task ids are identifiers anyway
                if _is_learner_text(text):
                    entry = found.setdefault(text, {"msgid": text, "locations": [], "kinds": []})
                    entry["locations"].append((rel, node.lineno))
                    kind = _kind(parents, node)
                    if kind not in entry["kinds"]:
                        entry["kinds"].append(kind)
                if not isinstance(node, ast.BinOp):
                    return
            for child in ast.iter_child_nodes(node):
                visit(child, parents + [node], docs, rel)

        visit(tree, [])
    return list(found.values())


PO = ROOT / "attnbook" / "locales" / "ko" / "tasks.po"


def _read_po():
    from babel.messages.pofile import read_po

    with open(PO, "rb") as handle:
        return read_po(handle)


def check(messages) -> list[str]:
    """Problems of tasks.po against the task files: missing, obsolete, untranslated or fuzzy entries."""
    catalog = _read_po()
    have = {m.id: m for m in catalog if m.id}
    want = {m["msgid"] for m in messages}
    problems = [f"missing from tasks.po: {i!r}" for i in sorted(want - set(have))]
    problems += [f"in tasks.po but in no task file: {i!r}" for i in sorted(set(have) - want)]
    problems += [
        f"not translated (or fuzzy): {i!r}"
        for i, m in sorted(have.items())
        if i in want and (not m.string or m.fuzzy)
    ]
    return problems


#: the catalogue's words for the commonest kinds of message (as its older entries say them)
_COMMENT = {
    "Fail[0]": "failure message",
    "Fail[2]": "failure hint",
    "Misconception[1]": "misconception message",
    "Misconception.hint": "misconception hint",
}


def update(messages) -> None:
    """Bring tasks.po in line with the task files; translations of unchanged msgids are kept."""
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import write_po

    old = _read_po()
    template = Catalog(locale="ko")
    kinds = {}
    for m in messages:
        template.add(m["msgid"], locations=[tuple(loc) for loc in m["locations"]])
        kinds[m["msgid"]] = ", ".join(m["kinds"])
    known = {m.id: m for m in old if m.id}
    new = Catalog(
        locale="ko",
        project=old.project,
        version=old.version,
        copyright_holder=old.copyright_holder,
        language_team=old.language_team,
        fuzzy=False,
        creation_date=old.creation_date,
        revision_date=old.revision_date,
    )
    new.header_comment = old.header_comment
    new.last_translator = old.last_translator
    new.msgid_bugs_address = old.msgid_bugs_address
    for m in template:
        if not m.id:
            continue
        before = known.get(m.id)
        translated = bool(before and before.string)
        comments = list(before.auto_comments) if before else []
        if not translated:
            comments = ["new: to translate"]
        elif not comments or comments == ["new: to translate"]:
            kind = kinds.get(m.id) or "message"  # translated: what kind of message it is
            comments = [_COMMENT.get(kind, kind)]
        new.add(m.id, before.string if before else "", locations=m.locations, auto_comments=comments)
    with open(PO, "wb") as handle:
        write_po(handle, new, width=0, sort_output=False)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    messages = extract()
    if "--check" in argv:
        problems = check(messages)
        for line in problems:
            print(line)
        print(
            f"{len(messages)} messages in the task files; {len(problems)} problems in {PO.relative_to(ROOT)}"
        )
        return 1 if problems else 0
    if "--update" in argv:
        update(messages)
        problems = check(messages)
        print(f"{PO.relative_to(ROOT)} updated: {len(problems)} entries to translate")
        return 0
    if "--text" in argv:
        for m in messages:
            print(m["msgid"])
    else:
        json.dump(messages, sys.stdout, ensure_ascii=False, indent=1)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
