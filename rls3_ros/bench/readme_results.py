"""Keep the README's results section generated from the latest benchmark run.

The section between ``<!-- results:start -->`` and ``<!-- results:end -->`` is rebuilt from
``results/learning.md`` and ``results/speed.md`` (whichever exist) after every full benchmark
run that writes into the repository's ``results/``.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _section(md: Path) -> str:
    text = md.read_text()
    text = re.sub(r"^# ", "### ", text, flags=re.M)  # nest the benchmark's title
    return re.sub(r"!\[([^\]]*)\]\(([^)/]+)\)", r"![\1](results/\2)", text)  # image paths from the repo root


def is_repo_results(out_dir: Path) -> bool:
    return Path(out_dir).resolve() == (REPO / "results").resolve()


def update_readme(results_dir: Path = REPO / "results", readme: Path = REPO / "README.md") -> bool:
    """Rewrite the results section; False when the README has no markers or nothing to show."""
    results_dir, readme = Path(results_dir), Path(readme)
    if not readme.is_file():
        return False
    parts = [_section(results_dir / f"{n}.md") for n in ("learning", "speed") if (results_dir / f"{n}.md").is_file()]
    text = readme.read_text()
    if START not in text or END not in text or not parts:
        return False
    body = "\n\n".join(p.strip() for p in parts)
    new = text[: text.index(START) + len(START)] + "\n" + body + "\n" + text[text.index(END):]
    readme.write_text(new)
    return True
