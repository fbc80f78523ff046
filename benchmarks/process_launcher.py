"""Run a Python program as a user would and record what a whole-process comparison needs.

    python process_launcher.py STATS.json [--legacy-shims] --script PATH -- ARGS...
    python process_launcher.py STATS.json --module sfda.cli -- fit --config ...

The program runs in this process (``runpy``, as ``__main__``), unedited. At exit the launcher writes to
``STATS.json``: the process's peak resident memory (``ru_maxrss``) and CPU seconds, the same for its
finished child processes (data-loader workers; their peak is the largest one's), and the start-up time:
from ``SFDA_SPAWNED_AT`` (the ``time.time()`` the caller took just before starting the process) to the
network's first forward on a batch of more than one sample (imports, data set-up and model loading; a
one-sample forward, such as a width probe while building a model, is not counted).

``--legacy-shims`` lets code written for a 2019 CUDA machine run on this CPU with today's torch without
editing it: ``Tensor.cuda`` and ``Module.cuda`` return the object unchanged, data-loader iterators get
back the ``.next()`` method that torch removed (an alias of ``__next__``), and ``torch._six`` (removed in
torch 2.0) is back with its ``string_classes``. Nothing else is changed. ``--accept-any-md5`` also makes
the official digit code's ``data_load.utils.check_md5`` accept any file, for placeholder source files
that its target phase opens but never reads (``official_shot_process.py --case dtn``).
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import runpy
import sys
import time

MiB = 1024.0


def install_legacy_shims() -> None:
    import types

    import torch
    from torch.utils.data import dataloader

    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    dataloader._BaseDataLoaderIter.next = dataloader._BaseDataLoaderIter.__next__
    six = types.ModuleType("torch._six")
    six.string_classes = (str, bytes)
    sys.modules["torch._six"], torch._six = six, six


def main() -> None:
    stats_path, rest = sys.argv[1], sys.argv[2:]
    legacy_shims, any_md5 = "--legacy-shims" in rest, "--accept-any-md5" in rest
    rest = [a for a in rest if a not in ("--legacy-shims", "--accept-any-md5")]
    kind, target, separator, program_args = rest[0], rest[1], rest[2], rest[3:]
    if kind not in ("--script", "--module") or separator != "--":
        raise SystemExit(f"usage: {sys.argv[0]} STATS.json [--legacy-shims] (--script PATH | --module NAME) "
                         "-- ARGS")
    spawned_at = float(os.environ.get("SFDA_SPAWNED_AT", time.time()))
    pid, first_batch = os.getpid(), {}

    import torch

    def first_forward(module, inputs):
        if not first_batch and inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() > 0 \
                and inputs[0].shape[0] > 1 and os.getpid() == pid:
            first_batch["startup_s"] = time.time() - spawned_at

    hook = torch.nn.modules.module.register_module_forward_pre_hook(first_forward)

    def write_stats() -> None:
        if os.getpid() != pid:  # a forked worker
            return
        hook.remove()
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        stats = {"peak_rss_mib": own.ru_maxrss / MiB, "cpu_s": own.ru_utime + own.ru_stime,
                 "children_peak_rss_mib": children.ru_maxrss / MiB,
                 "children_cpu_s": children.ru_utime + children.ru_stime, **first_batch}
        with open(stats_path, "w") as out:
            json.dump(stats, out)

    atexit.register(write_stats)
    if legacy_shims:
        install_legacy_shims()
    if kind == "--script":
        sys.argv = [target, *program_args]
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
        if any_md5:
            import data_load.utils

            data_load.utils.check_md5 = lambda *args, **kwargs: True
        runpy.run_path(target, run_name="__main__")
    else:
        sys.argv = [target, *program_args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
