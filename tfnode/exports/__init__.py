"""Exports in TF Serving's layout: `layout` (the folders and the files beside the
SavedModel), `write` (the SavedModel writer and re-export) and `read` (the model reader).
"""
