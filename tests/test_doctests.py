"""The docstring examples of every module of pocketflow_tf run and stay true.

The modules are discovered, not listed, so a new module's examples cannot be forgotten.
``learners/``, ``hp_optimizers/`` and ``nets/`` live at the top of the source tree but are
installed as ``pocketflow_tf.learners`` etc. (setup.py ``package_dir``), so they are walked from
their own ``__path__``.
"""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import pocketflow_tf

# Sub-packages installed under pocketflow_tf from directories outside pocketflow_tf/.
_MAPPED_SUBPACKAGES = ("learners", "hp_optimizers", "nets")


def _module_names() -> list[str]:
    """Every importable module and package of pocketflow_tf, sorted by dotted name.

    Returns:
        The dotted names, the root package included.
    """
    names = {pocketflow_tf.__name__}
    roots = [pocketflow_tf] + [
        importlib.import_module(f"pocketflow_tf.{sub}") for sub in _MAPPED_SUBPACKAGES
    ]
    for root in roots:
        names.add(root.__name__)
        for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
            names.add(info.name)
    return sorted(names)


MODULE_NAMES = _module_names()


def test_discovery_covers_every_source_file():
    """One case per .py file under each root package's directories: discovery skips none."""
    from pathlib import Path

    expected = set()
    for sub in ("", *_MAPPED_SUBPACKAGES):
        root = importlib.import_module("pocketflow_tf" + (f".{sub}" if sub else ""))
        for folder in root.__path__:
            for path in Path(folder).rglob("*.py"):
                parts = path.relative_to(folder).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                expected.add(".".join((root.__name__, *parts)))
    assert set(MODULE_NAMES) == expected
    assert "pocketflow_tf.learners.auto.compress" in expected


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_docstring_examples(name):
    # import_module, not attribute access: the function compress() re-exported by
    # pocketflow_tf.learners.auto hides its module of the same name.
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
