"""One module per figure/table; each defines ``make(records_dir, out_dir) -> list[Path]``.

:mod:`results.make_figures` runs every module listed in ``PLOTS`` (reads only
``results/records``; writes ``results/tables/*.md`` and ``results/figures/*.png``).
"""
