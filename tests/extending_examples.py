"""The worked examples of docs/extending.md, installed for the tests before they are collected.

:func:`install` writes the page's package (its module, and a ``.dist-info`` with the entry
points of its ``pyproject.toml``, as pip would) into :data:`PLUGIN_DIR`, puts that on
``sys.path`` and runs the page's other examples, which register their parts. Tests that
start processes give them ``PLUGIN_DIR`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
import re
import shutil
import sys
import tempfile
from pathlib import Path

import tomllib

EXTENDING = Path(__file__).resolve().parent.parent / "docs" / "extending.md"
PLUGIN_MODULE = "funnel_most_played"
PLUGIN_DIR = Path(tempfile.mkdtemp(prefix="funnel-plugin-"))
EXAMPLES: dict = {"__name__": "docs_extending"}  # the namespace the page's other examples run in


def install() -> None:
    """Install the page's package where this process and its children (PYTHONPATH) import it; run its examples."""
    text = EXTENDING.read_text(encoding="utf-8")
    package = tomllib.loads(re.search(r"```toml\n(.*?)```", text, flags=re.S).group(1))["project"]
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    module = [b for b in blocks if b.startswith(f"# {PLUGIN_MODULE}.py")]
    assert len(module) == 1, f"docs/extending.md should show the module {PLUGIN_MODULE}.py once"
    (PLUGIN_DIR / f"{PLUGIN_MODULE}.py").write_text(module[0], encoding="utf-8")
    info = PLUGIN_DIR / f"{PLUGIN_MODULE}-{package['version']}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package['name']}\nVersion: {package['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
        for group, points in package["entry-points"].items()))
    sys.path.insert(0, str(PLUGIN_DIR))
    importlib.invalidate_caches()
    for block in blocks:
        if block is not module[0]:
            exec(compile(block, str(EXTENDING), "exec"), EXAMPLES)  # noqa: S102 - the project's own document


def uninstall() -> None:
    shutil.rmtree(PLUGIN_DIR, ignore_errors=True)
