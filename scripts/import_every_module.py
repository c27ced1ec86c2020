"""Import every module of mimbench and its built-in plugins from wherever ``mimbench`` is found
(a check of an installed wheel, run from outside the checkout by ``.ci/run`` and
``tests/test_packaging.py``). Prints where ``mimbench`` came from, then how many modules imported."""

import importlib
import pkgutil

import mimbench
import mimbench_plugins

count = 0
for package in (mimbench, mimbench_plugins):
    count += 1
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.endswith(".__main__"):  # importing it runs the command line
            continue
        importlib.import_module(info.name)
        count += 1
print(mimbench.__file__)
print(count)
