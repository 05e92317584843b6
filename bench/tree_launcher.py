"""Run another tree's sci_fetch with this venv's packages, for interleaved old/new pairs (``--trees`` of
bench.download_scale's crash part):

    mkdir OLD && git archive 50fa0fc sci_fetch | tar -x -C OLD && cp bench/tree_launcher.py OLD/
    python -m bench.download_scale --parts crash --sizes 110320 --workdir DIR --trees old=OLD/tree_launcher.py,new=

It imports ``sci_fetch`` from the folder it sits in: the worktree's editable install puts a finder on
``sys.meta_path`` that PYTHONPATH does not override, so that finder is taken out first.
"""

import runpy
import sys
from pathlib import Path

_EDITABLE = "__editable__"  # setuptools' finder: a class (its own __module__) or an instance (its type's)
sys.meta_path[:] = [
    f
    for f in sys.meta_path
    if _EDITABLE not in str(getattr(f, "__module__", "")) and _EDITABLE not in type(f).__module__
]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.argv = ["sci_fetch", *sys.argv[1:]]
runpy.run_module("sci_fetch", run_name="__main__", alter_sys=True)
