"""Analyses built on dictionaries: features, patching, circuits, steering, alignment."""
