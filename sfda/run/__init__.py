"""What every ``sfda`` run shares, importing nothing else of sfda (the leaf of the layers):

- ``folder``: the run's own folder, its newest checkpoint, the git commit and versions it records
- ``recorder``: ``run_info.json``, ``results.json`` and ``config.yaml`` of a run
- ``guards``: no non-finite weights in a checkpoint; a collapsed class marginal stops the run
- ``stops``: a run stopped by a signal (all processes together) or after a number of epochs
- ``seeding``: per-step seeding of every generator
- ``speed``: channels-last memory order and folded BatchNorm
- ``checks``: what a run is refused for before it starts (trainer values, checkpoints)
- ``checkpoint_choice``: the checkpoint a label-free validator picks
- ``console``, ``progress``, ``quiet``, ``timing``: what a run prints, and its stopwatch
- ``keys``, ``version``: logged names the callbacks read, sfda's version
"""
