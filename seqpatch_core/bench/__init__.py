"""Speed: the per-click benchmark (``speed``) and every inference path side by side (``paths``).

Imports the layers below it; nothing but the command line imports this package.
"""
