"""Ask/tell hyper-parameter optimisers and the resumable search loop (issue 6).

Installed as ``pocketflow_tf.hp_optimizers``. ``space`` describes what is searched, ``base``
holds the ask/tell contract and the registry of optimisers ("random", "tpe", "gp", "amc"),
``search`` the resumable study loop (``parallel``, ``shared_storage`` and ``worker``: its
trials in parallel processes on a shared optuna storage), ``in_memory`` the loop a learner's
own search runs inside one ``fit``.

Example:
    >>> from pocketflow_tf.hp_optimizers import space
    >>> space.SearchSpace([space.Float("x", 0.0, 1.0)]).names
    ['x']
"""

# Importing registers the optimisers; optuna and keras-tuner load only when used.
from pocketflow_tf.hp_optimizers import (  # noqa: F401
    amc,  # "amc": DDPG in the AMC design
    base,  # the ask/tell contract and the registry
    gp,  # "gp": keras-tuner's Bayesian oracle
    in_memory,  # the in-memory loop of a learner's own search
    random_search,  # "random"
    search,  # the resumable study loop
    space,  # what is searched
    tpe,  # "tpe": optuna
)
