"""The algorithm core: the paper's math as pure functions, the networks, the algorithms.

Layers, each importing only those above it: ``functional`` and ``models``; ``training`` (what
every plugin algorithm shares); ``lagrangian`` (the state-wise family) and ``fpi``; ``variants``.
"""
