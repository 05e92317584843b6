"""sci_fetch: COCO Camera Traps images from S3 to verified files, then crops and the crop-label CSV."""

__version__ = "0.1.0"
