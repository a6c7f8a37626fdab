"""The app layer: workflows that chain the stages (prune a folder, evaluate, export, push).

The CLI calls one workflow per command; nothing below this layer imports it.
"""
