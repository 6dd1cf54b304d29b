"""Model + data recipes and their run scripts (``<model>_at_<dataset>_run.py``).

Installed as ``pocketflow_tf.nets``. The architectures are built by :mod:`.simple`,
:mod:`.resnet`, :mod:`.mobilenet` and :mod:`.userstyle` (a functional model as users write
them); :mod:`.recipe` pairs each with its data set and full
training recipe (:data:`~.recipe.RECIPES`).

Example:
    >>> from pocketflow_tf.nets import recipe
    >>> sorted(recipe.RECIPES)[:2]
    ['convnet_at_fmnist', 'lenet_at_cifar10']
"""
