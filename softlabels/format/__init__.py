"""The label-store format, independent of any storage: the stored header (schema) and row encodings.

Nothing here imports torch or zarr, so any layer (and a CLI that validates before importing
torch) can use it.
"""
