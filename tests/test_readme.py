"""The README's promises: the Quick start is exactly two commands, every object it lists exists.

Its ```python blocks run in `tests/test_docstring_examples.py`, the one harness for examples.
"""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _section(title):
    text = open(README, encoding="utf-8").read()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_quick_start_is_exactly_make_demo_and_make_test():
    blocks = re.findall(r"```\n(.*?)```", _section("Quick start"), re.S)
    assert [line for line in blocks[0].splitlines() if line.strip()] == ["make demo", "make test"]


def test_every_documented_object_exists():
    # Each "built" row of the tricks table names objects (`module.attr`) that must exist.
    import importlib

    rows = [r for r in _section("The tricks").splitlines() if r.endswith("| built |")]
    assert len(rows) >= 30
    for row in rows:
        for ref in re.findall(r"`([a-z_]+(?:\.[A-Za-z_0-9]+)+)", row.split("|")[3]):
            module, _, attr = ref.rpartition(".")
            if not module.startswith("tfrecord_tools"):
                module = f"keras_tricks.{module}"
            assert hasattr(importlib.import_module(module), attr), f"README names {ref}"
