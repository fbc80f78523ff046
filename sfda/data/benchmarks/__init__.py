"""The generators of the named generated benchmarks, each registered with ``sfda.data.fetch`` as a
``demo://<name>/...`` data set: ``skull_stripping`` (MRI volumes and brain masks from Debian packages),
``digit_detection`` (digits on plain canvases -> on photographs), ``pose_figures`` (flat-shaded figures
-> figures on photographs) and ``yell_fog`` (real aerial crowns -> under synthetic fog)."""

from . import digit_detection, pose_figures, skull_stripping, yell_fog

__all__ = ["digit_detection", "pose_figures", "skull_stripping", "yell_fog"]
