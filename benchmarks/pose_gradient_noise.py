"""Why pose SFDA cannot train the same weights on 1 and 2 processes after its first step (docs/guides/pose.md,
"Several processes"): after one step, S and I still nearly agree, so L_S = MSE(S(x), I(x)) is ~1e-16 and its
gradient is of the order of float32 rounding. Adam normalises each element's step, so rounding decides
lr-sized steps, and a different reduction order (another process count) decides them differently.

    python benchmarks/pose_gradient_noise.py

Prints L_S after one training step, its gradient norm on S's decoder, and how far the float32 gradient
is from the float64 one (relative error, sign agreement), and from a float32 gradient of inputs changed
by one part in 1e7. Tiny generated figures and an untrained CPU-sized SimpleBaseline; nothing is written
outside a temporary folder.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from sfda.data import InputSpec, PoseDataModule
from sfda.data.benchmarks.pose_figures import JOINTS, generate
from sfda.methods import PoseSFDA
from sfda.methods.pose_sfda import mse
from sfda.models import SourceArtifact
from sfda.models.pose import pose_architecture, simple_baseline


def decoder_gradient(method: PoseSFDA, images: torch.Tensor, dtype: torch.dtype, scale: float = 1.0):
    """L_S and its gradient on S's decoder, computed in ``dtype`` on copies of S and I."""
    source, intermediate = (copy.deepcopy(n).to(dtype).train() for n in (method.source_net, method.network))
    x = images.to(dtype) * scale
    loss = mse(source(x), intermediate(x).detach())
    grads = torch.autograd.grad(loss, list(source.decoder.parameters()))
    return loss.item(), torch.cat([g.reshape(-1) for g in grads]).double()


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        photo = generate(root, "photo", "train", count=16)
        spec = InputSpec(size=64, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        torch.manual_seed(0)
        architecture = pose_architecture(len(JOINTS), "resnet18", 16)
        state = simple_baseline(**architecture["kwargs"]).state_dict()
        SourceArtifact(
            architecture=architecture, state_dict=state, class_names=list(JOINTS), input=spec, task="pose"
        ).save(root / "pose.pt")
        L.seed_everything(0)
        data = PoseDataModule([str(photo)], role="target", batch_size=8, eval_batch_size=8)
        method = PoseSFDA(str(root / "pose.pt"), evaluate_source=False, occlusion=0.0, target_relevant=False)
        L.Trainer(
            max_steps=3,
            logger=CSVLogger(root),
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            accelerator="cpu",
        ).fit(method, datamodule=data)
        images = next(iter(data.train_dataloader()))["image"]
        loss64, exact = decoder_gradient(method, images, torch.float64)
        loss32, rounded = decoder_gradient(method, images, torch.float32)
        _, moved = decoder_gradient(method, images, torch.float32, 1 + 1e-7)
        print(f"L_S after one step: float64 {loss64:.3e}, float32 {loss32:.3e}")
        print(
            f"gradient norm {exact.norm():.3e}; float32 vs float64: relative error "
            f"{(rounded - exact).norm() / exact.norm():.3e}, sign agreement "
            f"{(rounded.sign() == exact.sign()).double().mean():.4f}"
        )
        print(
            f"float32, inputs x (1 + 1e-7): relative change {(moved - rounded).norm() / rounded.norm():.3e}, "
            f"sign agreement {(moved.sign() == rounded.sign()).double().mean():.4f}"
        )


if __name__ == "__main__":
    main()
