"""Post-stage: crop every labelled box of a COCO file out of the downloaded images, and filter exports.

Kept import-free on purpose: the crop workers import ``sci_fetch.crops.cropper`` in fresh processes,
and each import here would be paid once per worker.
"""
