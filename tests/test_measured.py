"""The figures a chapter quotes from a measurement made outside its page (a script in tools/ whose run does
not fit in a notebook) are the script's output, kept in tools/measured/: a quoted figure that no run printed,
or a run that changed without the chapter, fails here."""

from __future__ import annotations

import re

import nbformat

from conftest import ROOT

MEASURED = ROOT / "tools" / "measured"


def _paragraph(notebook: str, starts: str) -> str:
    nb = nbformat.read(ROOT / "chapters" / notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for paragraph in cell.source.split("\n\n"):
                if paragraph.startswith(starts):
                    return " ".join(paragraph.split())
    raise AssertionError(f"{notebook}: no paragraph starting {starts!r}")


def _longest_exact(printed: str) -> dict[str, str]:
    """{run name: its 30-60-word exact match} from the printout of tools/offsets_seeds.py or
    tools/learned_hint.py ("name (N s of CPU)" then "  exact: ... 30–60: 0.xxx")."""
    return dict(re.findall(r"^(.+?) \(\d+ s of CPU\)\n  exact: .*30–60: (\d\.\d{3})$", printed, re.M))


def _figures(text: str) -> list[str]:
    return re.findall(r"\d+\.\d{3}", text)


def test_chapter_7_quotes_the_plain_model_trained_longer():
    printed = (MEASURED / "plain_to_plateau.txt").read_text(encoding="utf-8")
    runs = printed.split("plain model, ")[1:]
    assert [run.split(" ")[0] for run in runs] == ["4", "8"]
    end_loss = [re.findall(r"\d\.\d{3}", run.split("\n")[1])[-1] for run in runs]
    exact = {
        k: re.findall(rf"{k}: tokens (\d\.\d{{3}}), exact (\d\.\d{{3}})", printed)
        for k in ("9–15", "16–22", "30–60")
    }
    text = _paragraph("07_seq2seq_with_attention.ipynb", "Trained longer, the plain model")
    assert f"0.918, {end_loss[0]} and {end_loss[1]} at the end" in text
    assert f"0.165, {exact['9–15'][0][1]} and {exact['9–15'][1][1]} of those of 9 to 15 words" in text
    assert f"0.000, {exact['16–22'][0][1]} and {exact['16–22'][1][1]} of 16 to 22" in text
    assert f"0.167, {exact['30–60'][0][0]} and {exact['30–60'][1][0]} of the tokens right" in text
    assert all(e == "0.000" for _, e in exact["30–60"])  # "and not one sentence"


def test_chapter_8_quotes_the_runs_at_other_seeds():
    printed = (MEASURED / "offsets_seeds.txt").read_text(encoding="utf-8")
    longest = _longest_exact(printed)
    luong = [longest["Luong, seed 1"], longest["Luong, seed 2"]]
    bahdanau = [longest["Bahdanau, seed 1"], longest["Bahdanau, seed 2"]]
    offsets = [longest["with offsets, seed 1"], longest["with offsets, seed 2"]]
    unscaled = longest["with offsets stored as they are (offset_scale=1), seed 0"]
    text = _paragraph("08_attention_matrix_form.ipynb", "Each model was trained once here.")
    assert f"Luong's model gets {luong[0]} and {luong[1]}" in text
    assert f"Bahdanau's {bahdanau[0]} and {bahdanau[1]}" in text
    assert f"the numbers {offsets[0]} and {offsets[1]}" in text
    assert f"the model gets {unscaled}" in text
    # the gains it quotes are the differences, seed by seed (seed 0's from the page's own table)
    gains = [0.958 - 0.660] + [float(o) - float(p) for o, p in zip(offsets, luong)]
    assert "(" + ", ".join(f"{g:.3f}" for g in gains) + ")" in text
    spread = re.search(r"numbers r_k - r_0: (.*)$", printed.split("offset_scale=1")[1], re.M).group(1)
    values = [float(v) for v in re.findall(r"-?\d+\.\d+", spread.replace(": ", " "))[1::2]]
    assert max(values) - min(values) < 2  # "end less than 2 apart"
    assert "seed 2" in text and "-7.75" in text.replace("−", "-")
    assert re.search(r"-1: -7\.75", printed)
    assert _figures(text)  # the paragraph quotes figures at all


def test_the_other_processor_figures_are_what_it_printed():
    """Chapters 7, 8 and 11, run_locally and CONTRIBUTING quote what another processor gave; its printout
    is kept in tools/measured/other_processor.txt."""
    everything = (MEASURED / "other_processor.txt").read_text(encoding="utf-8")
    # the other processor with its own kernels; the runs with other settings follow "# ====="
    printed = everything.split("# =====")[0]
    chapter_7 = printed.split("cell 18\n")[1].split("##")[0]
    longest = re.search(r"30–60\s+144 \|.*\|\s+\S+\s+(\d\.\d{3})", chapter_7).group(1)
    assert longest == "0.806"
    for page in ("book/run_locally.md", "CONTRIBUTING.md"):
        assert "0.806" in (ROOT / page).read_text(encoding="utf-8")
    gaps = re.search(r"Bahdanau minus Luong, in sentences: \[([^\]]*)\]", printed).group(1)
    as_words = [str(abs(int(k))) for k in gaps.split(",")]
    text = _paragraph("08_attention_matrix_form.ipynb", "In the run stored with this page the two")
    assert f"the gaps were {', '.join(as_words[:-1])} and {as_words[-1]} sentences" in text
    # chapter 8's timing ratios in the other runs: every block of the printout, all settings
    epoch = sorted(re.findall(r"Bahdanau's epoch costs (\d\.\d) times", everything))
    loop = sorted(re.findall(r"multiplies Luong's time by (\d\.\d)", everything))
    text = _paragraph("08_attention_matrix_form.ipynb", "The loop alone about doubles")
    assert f"Luong's pass {loop[0]} to {loop[-1]} times as dear" in text
    assert f"Bahdanau's epoch cost {epoch[0]} to {epoch[-1]} times Luong's" in text
    chapter_11 = printed.split("11_transformer.ipynb, cell 19\n")[1]
    shortest = re.search(r"3–8\s+242 \|.*\|\s+\S+\s+(\d\.\d{3})\s+(\d\.\d{3})", chapter_11).groups()
    text = _paragraph("11_transformer.ipynb", "The numbers are for one seed")
    assert f"the Transformer got {shortest[1]} of the shortest" in text
    assert f"RNN with attention {shortest[0]}" in text


def test_chapter_7_quotes_its_learned_model_in_other_runs():
    """Chapter 7's last section quotes the runs of tools/learned_hint.py (other seeds, other kernel
    settings, the same width without the numbers) and, for the processor its cell was stored from,
    Luong's model and the hint of that run (tools/measured/other_processor.txt)."""
    printed = (MEASURED / "learned_hint.txt").read_text(encoding="utf-8")
    longest = _longest_exact(printed)
    seeds = [longest[f"with the numbers, seed {k}"] for k in (1, 2, 3)]
    settings = [
        longest["with the numbers, seed 0, ATEN_CPU_CAPABILITY=avx2"],
        longest["with the numbers, seed 0, MKL_CBWR=COMPATIBLE"],
    ]
    narrow = [longest[f"as narrow, without the numbers, seed {k}"] for k in (0, 1, 2, 3)]
    text = _paragraph("07_seq2seq_with_attention.ipynb", "The output stored with this cell")
    assert f"the model with the numbers got {settings[0]} and {settings[1]} of those sentences" in text
    assert f"trained from other seeds, {seeds[0]}, {seeds[1]} and {seeds[2]}" in text
    assert (
        f"without the numbers, got {narrow[0]}, {narrow[1]}, {narrow[2]} and {narrow[3]} at the same four seeds"
        in (text)
    )
    # the run that stored cell 46: its printout is kept, and the prose quotes its Luong and hint columns
    everything = (MEASURED / "other_processor.txt").read_text(encoding="utf-8")
    kept = everything.split("## that run: chapters/07_seq2seq_with_attention.ipynb, cell 46\n")[1]
    nb = nbformat.read(ROOT / "chapters" / "07_seq2seq_with_attention.ipynb", as_version=4)
    stored = "".join(o.get("text", "") for o in nb.cells[46].outputs if o.get("name") == "stdout")
    assert stored.strip() == kept.split("\n## ")[0].split("\n# ")[0].strip()
    plain, luong, hint, learned = (
        re.search(r"30–60\s+144 \|((?:\s+\d\.\d{3}){4}) \|", stored).group(1).split()
    )
    assert (
        f"there Luong's model as trained got {luong} of the sentences of 30 words or more, and with the hint {hint}"
        in (text)
    )
    first = _paragraph("07_seq2seq_with_attention.ipynb", "With nine learned numbers")
    assert f"the model translates {learned} of the test sentences of 30 words or more" in first
    # the summary's ranges cover every other run
    others = sorted(seeds + settings)
    summary = _paragraph("07_seq2seq_with_attention.ipynb", "* Seq2seq with attention, Luong")
    assert f"to {learned} of those sentences" in summary
    assert (
        f"Luong's model got {luong} and the hint {hint}; {others[0]} to {others[-1]} in other runs" in summary
    )
    low, high = min(map(float, narrow)), max(map(float, narrow))
    assert f"without the numbers, {low:.2f} to {high:.2f})" in summary
