"""The algorithm core: the paper's math as pure functions, the networks, the algorithms.

Layers, each importing only those above it: ``functional``, ``diffusion`` (ALGD's math),
``diffusion_actor`` and ``models``; ``training`` (what every plugin algorithm shares);
``lagrangian`` (the state-wise family), ``fpi`` and ``algd``; ``variants``.
"""
