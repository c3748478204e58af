"""The tools around training: run loading, comparison, risk maps, known-answer scoring, grids, the
benchmark. They read runs on disk or start them; nothing in the core or the glue imports them.
"""
