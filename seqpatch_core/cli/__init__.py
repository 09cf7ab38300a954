"""The command line, ``python -m seqpatch_core``: the parser and ``main`` (``main``) and one function per
command (``commands``). The top layer of the core: it may import every package below it, and nothing in
the core imports it.
"""
