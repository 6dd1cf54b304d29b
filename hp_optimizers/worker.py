"""A trial worker process: ``python -m pocketflow_tf.hp_optimizers.worker``.

Joins a study started by ``search.Study(..., storage=URL)`` (or ``workers=N``, which runs
this module ``N - 1`` times itself) and runs its trials until the budgets are spent and every
trial has finished. Start more on any machine that reaches the storage (and can import the
study's objective) to add workers to a running study.

Exit status: 0 when the budgets are spent, 2 on bad input (a clear message on stderr),
1 when the objective raised a non-trial error (its trial is retried by another worker).

Example:
    >>> main(["--storage", "journal:/tmp/s.log", "--study", "study"])
    2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pocketflow_tf import errors
from pocketflow_tf.hp_optimizers import parallel


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line.

    Example:
        >>> parse_args(["--storage", "sqlite:////tmp/s.db"]).study
        'study'
    """
    parser = argparse.ArgumentParser(
        prog="python -m pocketflow_tf.hp_optimizers.worker",
        description="Run trials of a parallel pocketflow_tf study.",
    )
    parser.add_argument(
        "--storage", required=True, help="the study's storage, e.g. sqlite:////abs/path/study.db"
    )
    parser.add_argument(
        "--study", default=parallel.DEFAULT_STUDY_NAME, help="the study's name (default: study)"
    )
    parser.add_argument("--label", default=None, help="this worker's name in the progress lines")
    parser.add_argument("--quiet", action="store_true", help="no line per trial")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one worker; returns the exit status.

    Example:
        >>> main(["--storage", "sqlite:///:memory:"])
        2
    """
    args = parse_args(argv)
    try:
        import pocketflow_tf.hp_optimizers  # noqa: F401  (registers the optimisers)

        worker = parallel.Worker(args.storage, args.study, label=args.label, verbose=not args.quiet)
    except errors.InvalidArgumentError as e:
        print(f"worker: {e}", file=sys.stderr)
        return 2
    reason = worker.run()
    if not args.quiet:
        print(f"[{worker.label}] done: {reason}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
