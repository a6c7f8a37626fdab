"""The core layer: errors, io, dtypes, the report schema and the option declarations.

Nothing here imports from a layer above it (tests/test_layers.py keeps it so).
"""
