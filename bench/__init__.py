"""Benchmarks: sci_fetch against s5cmd, rclone and the Animl-script method (not run by CI).

Run ``python -m bench`` (or ``--quick``) from the repository root; see bench/README.md.
"""
