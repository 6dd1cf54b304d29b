"""The application layer: what a person runs, above the library.

* :mod:`~pocketflow_tf.app.runner` runs one job of a recipe (train or compress, evaluate,
  export verified ``.tflite`` files, time them, write the record and report);
* :mod:`~pocketflow_tf.app.cli` turns the run scripts' flags (one per learner option,
  generated from the learners' ``Options``) into a run;
* :mod:`~pocketflow_tf.app.command` is the installed ``pocketflow-tf`` command for your own
  model and data.

Nothing in the library imports this package; it imports the library, the learners and the
recipes of ``pocketflow_tf.nets``.

Example:
    >>> from pocketflow_tf.app import runner
    >>> runner.target_missed({"metrics": {"target_met": False}})
    True
"""
