"""Ask/tell hyper-parameter optimisers and the resumable search loop (issue 6).

Installed as ``pocketflow_tf.hp_optimizers``. Empty in this version: no optimiser is
advertised until it is built and tested.
"""
