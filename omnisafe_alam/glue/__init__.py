"""The OmniSafe glue: default configs and their checks, the adapter, full checkpoints, registration.

``defaults``, ``config``, ``adapter`` and ``checkpoint`` import nothing from the core (the core's
training machinery builds on them); ``registration`` imports the core's algorithm classes only
when it registers them.
"""
