"""Execute notebooks in place, top to bottom, so that their stored outputs can be committed.

    python tools/execute_notebooks.py chapters/04_attention_scores.ipynb solutions/04_attention_scores.ipynb
    python tools/execute_notebooks.py --all          # every chapter and solution

The result is byte-stable: no timing metadata, carriage-return progress updates collapsed to their final
state, notebook metadata reduced to the kernel and language. A notebook whose execution raises an error
(outside cells tagged ``raises-exception``) is not written back, and the command exits non-zero.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import setup_cell  # noqa: E402  (tools/setup_cell.py: the setup cell made from _config.yml)

ROOT = Path(__file__).resolve().parents[1]
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python", "pygments_lexer": "ipython3"}
CARRIAGE = re.compile(r"[^\n]*\r(?!\n)")
#: First code cell of every chapter and solution: installs the helper package where it is missing (Colab,
#: Binder) from the one address set in _config.yml (`repository.url`); inside the repository's .venv it finds
#: attnbook and does nothing. Hidden in the HTML book. See tools/setup_cell.py.
SETUP_ID = setup_cell.CELL_ID
SETUP_SOURCE = setup_cell.setup_source(setup_cell.repository_url())


def ensure_setup_cell(nb: nbformat.NotebookNode) -> None:
    """Make the setup cell the first code cell (inserted after the title cell if missing)."""
    for cell in nb.cells:
        if cell.get("id") == SETUP_ID:
            cell.source = SETUP_SOURCE
            cell.metadata["tags"] = ["remove-cell"]
            return
    cell = nbformat.v4.new_code_cell(SETUP_SOURCE)
    cell.id = SETUP_ID
    cell.metadata["tags"] = ["remove-cell"]
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    nb.cells.insert(first_code, cell)


def collapse_carriage_returns(text: str) -> str:
    """Keep what a terminal would show: the text after the last ``\\r`` of each line."""
    return CARRIAGE.sub("", text)


def normalise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip what varies between runs or machines from an executed notebook."""
    nb.metadata = nbformat.from_dict(
        {
            "kernelspec": KERNELSPEC,
            "language_info": LANGUAGE_INFO,
            **{k: v for k, v in nb.metadata.items() if k not in ("kernelspec", "language_info", "widgets")},
        }
    )
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                previous = outputs[-1] if outputs else None
                if (
                    previous is not None
                    and previous.get("output_type") == "stream"
                    and previous["name"] == output["name"]
                ):
                    # The kernel may split one stream into several messages, depending on load: join them.
                    previous["text"] = collapse_carriage_returns(previous["text"] + output["text"])
                    continue
                output["text"] = collapse_carriage_returns(output["text"])
                if not output["text"].strip():  # a progress bar's last newline: an empty box in the book
                    continue
            if output.get("output_type") == "display_data" and (
                "application/vnd.jupyter.widget-view+json" in output.get("data", {})
            ):
                raise RuntimeError("a widget was stored in the outputs; guard it with in_jupyter()")
            outputs.append(output)
        cell.outputs = outputs
    return nb


def execute(path: Path, timeout: int = 300) -> float:
    """Execute ``path`` in place; return the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    ensure_setup_cell(nb)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        store_widget_state=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    nbformat.write(normalise(nb), path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help="every notebook in chapters/ and solutions/")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = list(args.notebooks)
    if args.all:
        paths += sorted((ROOT / "chapters").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
    if not paths:
        parser.error("name notebooks, or use --all")
    failed = 0
    for path in paths:
        try:
            seconds = execute(path.resolve(), args.timeout)
        except CellExecutionError as exc:
            failed += 1
            lines = str(exc).strip().splitlines()
            print(f"FAILED {path}:\n" + "\n".join("    " + line for line in lines[-15:]), file=sys.stderr)
            continue
        print(f"{seconds:6.1f} s  {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
