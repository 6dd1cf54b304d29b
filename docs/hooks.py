"""MkDocs hooks: the generated parts of the documentation (``hooks:`` in mkdocs.yml).

* ``<!-- flags -->`` in a page becomes :func:`pocketflow_tf.options.reference_markdown`, the
  flag reference generated from the learners' ``Options`` fields, so it cannot drift;
* ``<!-- common-flags -->`` becomes a table of the run scripts' other flags, read from the
  absl flags that :mod:`pocketflow_tf.app.cli` defines, and ``<!-- command-flags -->`` one
  of the ``pocketflow-tf`` command's own flags (:mod:`pocketflow_tf.app.command`);
* ``<!-- results -->`` becomes the benchmark tables that ``python -m bench.make_table``
  writes between ``<!-- results:start -->`` and ``<!-- results:end -->`` in README.md (one
  generated copy, read at build time);
* ``build/docs-src/pocketflow_tf`` mirrors the installed package layout with symlinks
  (``learners/``, ``hp_optimizers/`` and ``nets/`` are ``pocketflow_tf.<name>`` once
  installed, see ``package_dir`` in setup.py), so that mkdocstrings reads every docstring
  from the sources.
"""

from __future__ import annotations

import os
import re
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = "<!-- flags -->"
COMMON_FLAGS = "<!-- common-flags -->"
COMMAND_FLAGS = "<!-- command-flags -->"
RESULTS = "<!-- results -->"
START, END = "<!-- results:start -->", "<!-- results:end -->"
MIRROR = os.path.join(ROOT, "build", "docs-src", "pocketflow_tf")
SUBPACKAGES = ("learners", "hp_optimizers", "nets")


def _mirror_package() -> None:
    # Rebuilt every time: a module added or removed since the last build must show.
    shutil.rmtree(MIRROR, ignore_errors=True)
    os.makedirs(MIRROR)
    core = os.path.join(ROOT, "pocketflow_tf")
    entries = [(os.path.join(core, n), n) for n in os.listdir(core) if n != "__pycache__"]
    entries += [(os.path.join(ROOT, n), n) for n in SUBPACKAGES]
    for src, name in entries:
        os.symlink(src, os.path.join(MIRROR, name))


def on_startup(command: str, dirty: bool) -> None:  # noqa: ARG001 (MkDocs API)
    """Mirrors the installed package layout before mkdocstrings lists its search paths."""
    _mirror_package()


def _escape_tags(markdown: str) -> str:
    # Help texts say e.g. "<checkpoint_dir>.auto": outside code spans Markdown would take
    # that for an HTML tag and drop it.
    parts = re.split(r"(`[^`]*`)", markdown)
    return "".join(p if p.startswith("`") else p.replace("<", "&lt;") for p in parts)


def _flags() -> str:
    # The learners register themselves on import; the core does not import them.
    import pocketflow_tf.learners  # noqa: F401
    from pocketflow_tf import options

    return _escape_tags(options.reference_markdown())


def _flag_table(modules, skip: set[str]) -> str:
    from absl import flags

    lines = ["| flag | default | what it does |", "|---|---|---|"]
    for module in modules:
        for flag in flags.FLAGS.get_flags_for_module(module):
            if flag.name in skip:
                continue
            default = ",".join(flag.default) if isinstance(flag.default, list) else flag.default
            text = flag.help.replace("|", "\\|")
            lines.append(f"| `--{flag.name}` | `{default}` | {text} |")
    return _escape_tags("\n".join(lines))


def _common_flags() -> str:
    import dataclasses

    from pocketflow_tf import cli_errors
    from pocketflow_tf import learner as learner_lib
    from pocketflow_tf.app import cli

    # The learners' option flags are the other table; these are the rest of the scripts'.
    learner_options = {
        f.name
        for name in learner_lib.available()
        for f in dataclasses.fields(learner_lib.get_learner_class(name).Options)
    }
    return _flag_table((cli, cli_errors), learner_options)


def _command_flags() -> str:
    from pocketflow_tf.app import command

    return _flag_table((command,), set())


def _results() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    if START not in text or END not in text:
        raise ValueError(f"README.md lacks the markers {START} / {END}")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs API)
    """Replaces the markers of a page by the generated Markdown."""
    if FLAGS in markdown:
        markdown = markdown.replace(FLAGS, _flags())
    if COMMON_FLAGS in markdown:
        markdown = markdown.replace(COMMON_FLAGS, _common_flags())
    if COMMAND_FLAGS in markdown:
        markdown = markdown.replace(COMMAND_FLAGS, _command_flags())
    if RESULTS in markdown:
        markdown = markdown.replace(RESULTS, _results())
    return markdown
