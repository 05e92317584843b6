"""sci_fetch: COCO Camera Traps images from S3 to verified files, then crops and the crop-label CSV.

The Python API (see sci_fetch/api.py and the README)::

    import sci_fetch
    result = sci_fetch.download("export.json", "images", concurrency=32)   # a DownloadResult
    table = sci_fetch.crops("export.json", "images", label_map="sci")      # a pandas DataFrame

Both are imported on first use, so ``sci-fetch --help`` does not pay for the engine or pandas.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "crops", "download"]


def download(*args: Any, **kwargs: Any) -> Any:
    """Download every image a COCO file names; see sci_fetch.api.download."""
    from sci_fetch.api import download as _download

    return _download(*args, **kwargs)


class _CallableCrops(types.ModuleType):
    """``sci_fetch.crops`` is both the crops package and the API function ``sci_fetch.crops(...)``.

    Importing ``sci_fetch.crops.run`` rebinds the name ``crops`` on this package to the subpackage, so
    a plain function here would be replaced; making the subpackage callable keeps both spellings.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Crop every labelled box and return the crop table; see sci_fetch.api.crops."""
        from sci_fetch.api import crops as _crops

        return _crops(*args, **kwargs)


def _make_crops_callable() -> None:
    import sci_fetch.crops as package  # import-free on purpose (see its docstring), so cheap here

    package.__class__ = _CallableCrops


_make_crops_callable()
crops = sys.modules[__name__ + ".crops"]
