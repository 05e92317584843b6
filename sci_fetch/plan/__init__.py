"""A plan before a long run: how many of the keys left exist, how many bytes, whether they fit, how long.

``estimate`` is the pure math, ``population`` picks the random sample of keys still to fetch, ``probe``
sends the HEADs (and a few GETs) through the storage layer, ``check`` puts them together for
``sci-fetch plan`` and for the space check a download makes before it starts, ``report`` prints it.
"""
