"""Installs pocketflow-tf.

`learners/`, `hp_optimizers/` and `nets/` live at the top of the repository (PocketFlow's
layout) but install as `pocketflow_tf.learners`, `pocketflow_tf.hp_optimizers` and
`pocketflow_tf.nets`, so nothing generic lands at the top of site-packages.
"""

import os

from setuptools import setup

SUBPACKAGES = {"learners": "learners", "hp_optimizers": "hp_optimizers", "nets": "nets"}


def _packages():
    packages, package_dir = [], {"pocketflow_tf": "pocketflow_tf"}
    for root, _, files in os.walk("pocketflow_tf"):
        if "__init__.py" in files:
            packages.append(root.replace(os.sep, "."))
    for folder in SUBPACKAGES.values():
        for root, _, files in os.walk(folder):
            if "__init__.py" in files:
                dotted = "pocketflow_tf." + root.replace(os.sep, ".")
                packages.append(dotted)
                package_dir[dotted] = root
    return packages, package_dir


def _requirements():
    with open("requirements.txt") as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


packages, package_dir = _packages()
setup(
    name="pocketflow-tf",
    version="0.1.0",
    description="Automated model compression for Keras/TensorFlow with verified TFLite export",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    install_requires=_requirements(),
    # The installed command (compress / learn / export / latency on your own model and data).
    entry_points={"console_scripts": ["pocketflow-tf = pocketflow_tf.app.command:main"]},
)
