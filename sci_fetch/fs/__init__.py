"""Filesystem primitives every layer may use: the layout of an output folder and atomic replacement of a file.

At the bottom of the layers (it imports nothing of sci_fetch), so observe/, keys/ and files/ can all share one
temp-name style and one set of layout rules."""
