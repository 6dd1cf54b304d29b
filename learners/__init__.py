"""Compression learners, one sub-package per method, installed as ``pocketflow_tf.learners``.

Importing this package registers every built-in learner under its PocketFlow name.

Example:
    >>> import pocketflow_tf.learners
    >>> from pocketflow_tf import learner
    >>> learner.available()
    ['full-prec']
"""

from pocketflow_tf.learners import full_prec  # noqa: F401  (registers "full-prec")
