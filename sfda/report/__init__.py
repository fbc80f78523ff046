"""``sfda report``: one self-contained HTML page of one or several runs of one task (``command``), made
from the runs' own files (``run``); the evidence a run keeps for it while training is written by its task
(``sfda.tasks.evidence``).

Importing the package loads nothing: the report's own modules (matplotlib) load only with
``sfda.report.command``.
"""
