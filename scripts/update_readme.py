"""Copy generated tables into README.md between their markers (run after notebook 20 / `make figures`).

    python scripts/update_readme.py [--profile quick] [--check]

A block ``<!-- generated:NAME -->`` ... ``<!-- /generated:NAME -->`` in README.md receives
``figures/<profile>/NAME.md`` (a table notebook 20 writes); ``<!-- generated:NAME@PROFILE -->``
takes that profile's file whatever ``--profile`` says (a headline from the paper store beside the
cost the quick store predicts). ``--check`` exits 1 when a block differs from its file (a test runs
it), so the README never shows numbers no run produced.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(?P<open><!-- generated:(?P<name>[\w-]+)(?:@(?P<profile>[\w-]+))? -->\n)(?P<body>.*?)"
                   r"(?P<close><!-- /generated:(?P=name) -->)", re.S)


def render(text: str, profile: str, root: Path = REPO) -> str:
    """``text`` with every generated block replaced by its file's content (``profile`` where the
    block names none); SystemExit names a missing file."""
    def fill(m: re.Match) -> str:
        prof = m["profile"] or profile
        path = root / "figures" / prof / f"{m['name']}.md"
        if not path.exists():
            raise SystemExit(f"error: {path.relative_to(root)} does not exist; run notebook 20 for profile {prof!r}")
        return f"{m['open']}{path.read_text().strip()}\n{m['close']}"

    return BLOCK.sub(fill, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = ap.parse_args(argv)
    readme = REPO / "README.md"
    text = readme.read_text()
    if not BLOCK.search(text):
        raise SystemExit("error: README.md has no <!-- generated:NAME --> block")
    new = render(text, args.profile)
    if args.check:
        if new != text:
            print("README.md's generated tables differ from figures/; run: python scripts/update_readme.py")
            return 1
        return 0
    if new != text:
        readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
