"""Ask/tell hyper-parameter optimisers and the resumable search loop (issue 6).

Installed as ``pocketflow_tf.hp_optimizers``. ``space`` describes what is searched, ``base``
holds the ask/tell contract and the registry of optimisers.

Example:
    >>> from pocketflow_tf.hp_optimizers import space
    >>> space.SearchSpace([space.Float("x", 0.0, 1.0)]).names
    ['x']
"""

from pocketflow_tf.hp_optimizers import base, space  # noqa: F401
