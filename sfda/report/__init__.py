"""``sfda report``: one self-contained HTML page of one or several runs of one task (``command``), made
from the runs' own files (``run``), and the evidence a run keeps for it while training (``evidence``).

Importing the package loads nothing: ``sfda.methods`` imports ``sfda.report.evidence`` while training,
and the report's own modules (matplotlib) load only with ``sfda.report.command``.
"""
