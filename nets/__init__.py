"""Model + data recipes (``<model>_at_<dataset>.py``) and their run scripts (``*_run.py``).

Installed as ``pocketflow_tf.nets``. Each recipe module exposes ``RECIPE``, a
:class:`pocketflow_tf.nets.recipe.Recipe`.

Example:
    >>> from pocketflow_tf.nets import recipe
    >>> sorted(recipe.RECIPES)[:2]  # doctest: +SKIP
    ['convnet_at_fmnist', 'lenet_at_cifar10']
"""
