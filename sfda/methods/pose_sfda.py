"""Pose SFDA: source-free domain adaptive human pose estimation (Peng et al. ICCV 2023), as the spec
(``docs/methods/pose_sfda.md``) describes the intended design. The official release does not run; its
bugs are not copied: ``super()`` calls and model arguments are the intended ones, and the source weights
are loaded strictly (the release filtered a ``module.`` prefix with ``strict=False`` and never loaded
them).

Three networks of one architecture, all from the source model and all in train mode (BatchNorm adapts to
the target): source S (decoder trains, Adam 1e-4), intermediate I (backbone trains, Adam 1e-5; after
every target step I <- 0.999 I + 0.001 T on parameters), target T (everything, Adam 1e-4, x0.1 at
adaptation epochs 5 and 20: the official MultiStepLR's 45 and 60 count the 40 source epochs of its
70-epoch run). Per step, on one augmented image x, in the order S, I, T, then the EMA into I:

- source-protect: ``L_S = MSE(S(x), I(x))`` for S; ``L_I = MSE(S(x), I(x)) + 0.7 L_res(S(x), I(x))`` for I;
- target-relevant: ``L_T = MSE(I'(x), T(x~)) + 0.5 L_PC(I'(x), T(x~)) + 0.85 L_IM(T(x~))`` for T, where I'
  is I after its step and x~ is x with adaptive keypoint occlusion (each image with p 0.5: a patch of the
  same image pasted over every joint whose I' peak is at least 0.9).

Every cross-network target is detached. MSE is JointsMSE over all joints (0.5 x mean square). The network
evaluated, predicted with and checkpointed as the result is I; validation also scores T
(``<prefix>_t_network/...``).

Time constant: 0.999 per step is the official momentum for about 15,000 steps (I then keeps 3e-7 of the
source weights); over a few hundred CPU steps it leaves I mostly the source (0.999 ** 186 = 0.83).
``source_share`` chooses the momentum from the run's step count instead (``ema/momentum`` in
``results.json``); ``train/ema_source_share`` logs what I still holds each epoch, and
``train/occlusion_gate`` the fraction of joints whose I' peak reaches the occlusion gate;
``train/loss_t_mse``, ``train/loss_pc`` and ``train/loss_im`` T's terms unweighted (epoch means; the MSE alone
without the target-relevant terms).
"""

from __future__ import annotations

import os

import torch

from ..data.samplers import sample_seed
from ..losses.pose import heatmap_im, joints_mse, pose_contrastive, residual_kl
from ..models import ArtifactError, SourceModel
from ..pseudo_labels import gather_with_grad
from ..pseudo_labels.heatmaps import confident_joints, to_input_pixels
from ..pseudo_labels.teacher import check_momentum, ema_update
from ..tasks.adaptation import Adaptation
from ..tasks.optim import Optim


def adam(lr: float, milestones: tuple[int, ...] = ()) -> Optim:
    """Constant Adam (no weight decay), x0.1 at ``milestones``."""
    return Optim(name="adam", lr=lr, weight_decay=0.0, power=0.0, milestones=milestones, step_factor=0.1)


def all_joints(heatmaps: torch.Tensor) -> torch.Tensor:
    return torch.ones(heatmaps.shape[:2], device=heatmaps.device)


def mse(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """JointsMSE over every joint (the networks' heatmaps, no visibility)."""
    return joints_mse(predicted, target, all_joints(predicted))


def occlude(
    images: torch.Tensor,
    joints: torch.Tensor,
    chosen: list[bool],
    size: int,
    generators: list[torch.Generator],
) -> torch.Tensor:
    """Adaptive keypoint occlusion: for each chosen image, a ``size`` square copied from a random place of
    the same image over each joint of ``joints`` (a list per image of ``(n, 2)`` input pixel centres)."""
    out = images.clone()
    side = images.shape[-1]
    for b, (points, pick, generator) in enumerate(zip(joints, chosen, generators, strict=True)):
        if not pick:
            continue
        for x, y in points.round().long().tolist():
            top, left = (torch.randint(0, side - size + 1, (2,), generator=generator)).tolist()
            y0, x0 = min(max(y - size // 2, 0), side - size), min(max(x - size // 2, 0), side - size)
            out[b, :, y0 : y0 + size, x0 : x0 + size] = images[b, :, top : top + size, left : left + size]
    return out


class PoseSFDA(Adaptation):
    """Pose SFDA (see the module docstring).

    Args:
        source: the pose artifact (its network needs ``backbone`` and ``decoder`` parts, as SimpleBaseline's).
        source_lr, intermediate_lr, target_lr: Adam learning rates of S (decoder), I (backbone), T (all).
        target_milestones: adaptation epochs at which T's learning rate is multiplied by 0.1 (official: 5
            and 20 of 30; a shorter recipe scales them and says so).
        momentum: EMA of I towards T after every step, in (0, 1).
        source_share: instead of ``momentum``: the share of the source weights I keeps at the run's end;
            the momentum is ``share ** (1 / steps)`` (see the module docstring).
        res_weight, contrastive_weight, im_weight: 0.7 L_res, 0.5 L_PC, 0.85 L_IM.
        temperature: softmax temperature of L_res, L_PC and L_IM (faithful: 1; MSE heatmaps in [0, 1] make
            the softmax over positions nearly uniform, see ``sfda.losses.pose``).
        occlusion: probability of adaptive keypoint occlusion per image (0: off).
        occlusion_confidence: I' peak from which a joint is occluded.
        occlusion_size: side of the pasted patch, as a fraction of the input side.
        source_protect: train S and I (False: the ablation without source-protect; I only follows T).
        target_relevant: add L_PC and L_IM to T's loss (False: the ablation without them).
    """

    tasks = ("pose",)

    def __init__(
        self,
        source: SourceModel,
        evaluate_source: bool = True,
        source_lr: float = 1e-4,
        intermediate_lr: float = 1e-5,
        target_lr: float = 1e-4,
        target_milestones: tuple[int, ...] = (5, 20),
        momentum: float | None = None,
        source_share: float | None = None,
        res_weight: float = 0.7,
        contrastive_weight: float = 0.5,
        im_weight: float = 0.85,
        temperature: float = 1.0,
        occlusion: float = 0.5,
        occlusion_confidence: float = 0.9,
        occlusion_size: float = 0.12,
        source_protect: bool = True,
        target_relevant: bool = True,
    ):
        super().__init__(source, evaluate_source=evaluate_source)
        for name, value, ok, expected in (
            ("occlusion", occlusion, 0 <= occlusion <= 1, "a probability in [0, 1]"),
            ("occlusion_size", occlusion_size, 0 < occlusion_size < 1, "a fraction in (0, 1)"),
            ("occlusion_confidence", occlusion_confidence, 0 <= occlusion_confidence <= 1,
             "a peak in [0, 1]"),
            ("temperature", temperature, temperature > 0, "a positive temperature"),
        ):
            if not ok:
                raise ValueError(f"model.{name}: expected {expected}, got {value}")
        if momentum is not None and source_share is not None:
            raise ValueError("model.source_share: give either momentum or source_share, not both")
        self.momentum = check_momentum(0.999 if momentum is None else momentum, "model.momentum")
        self.source_share = source_share
        self.automatic_optimization = False
        self.source_net, self.target_net = self.artifact.build_network(), self.artifact.build_network()
        for name, net in (("intermediate", self.network), ("source", self.source_net)):
            if not (hasattr(net, "backbone") and hasattr(net, "decoder")):
                raise ArtifactError(
                    f"model.source: {self.artifact.origin}: pose SFDA trains the {name} network's "
                    "parts apart and needs `backbone` and `decoder` submodules (as SimpleBaseline's)"
                )
        self.source_net.backbone.requires_grad_(False)
        self.network.decoder.requires_grad_(False)
        self.rates = {"source": source_lr, "intermediate": intermediate_lr, "target": target_lr}
        self.target_milestones = tuple(target_milestones)
        self.weights = {"res": res_weight, "contrastive": contrastive_weight, "im": im_weight}
        self.temperature = temperature
        self.occlusion = (occlusion, occlusion_confidence, occlusion_size)
        self.source_protect, self.target_relevant = source_protect, target_relevant

    paired_name = "t_network"  # validation also scores T: <prefix>_t_network/...

    def paired_network(self) -> torch.nn.Module:
        return self.target_net  # I (evaluated) is the EMA of T

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.source_share is not None:
            self.momentum = self.momentum_from_share(self.source_share, "step", "model.source_share")

    def optimizer_specs(self) -> list[tuple[list[dict], Optim]]:
        """S's decoder, I's backbone, T's every parameter: three Adam optimisers (T with its milestones)."""
        return [
            (
                [{"params": list(self.source_net.decoder.parameters()), "lr": self.rates["source"]}],
                adam(self.rates["source"]),
            ),
            (
                [{"params": list(self.network.backbone.parameters()), "lr": self.rates["intermediate"]}],
                adam(self.rates["intermediate"]),
            ),
            (
                [{"params": list(self.target_net.parameters()), "lr": self.rates["target"]}],
                adam(self.rates["target"], self.target_milestones),
            ),
        ]

    def generators(self, index: torch.Tensor) -> list[torch.Generator]:
        """One generator per sample, seeded by (run seed, step, global index): the same draws on any
        number of processes."""
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return [
            torch.Generator().manual_seed(sample_seed(seed, self.global_step, int(i))) for i in index.tolist()
        ]

    def occluded(self, images: torch.Tensor, teacher: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        probability, confidence, fraction = self.occlusion
        peaks, keep = confident_joints(teacher, confidence)
        self.log("train/occlusion_gate", keep.float().mean(), on_step=False, on_epoch=True)
        if probability == 0:
            return images
        generators = self.generators(index)
        chosen = [bool(torch.rand((), generator=g) < probability) for g in generators]
        points = to_input_pixels(peaks, images.shape[-1], teacher.shape[-1])
        joints = [p[k.bool()].cpu() for p, k in zip(points, keep, strict=True)]
        size = max(1, round(fraction * images.shape[-1]))
        return occlude(images, joints, chosen, size, generators)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_s, opt_i, opt_t = self.optimizers()
        x, w, tau = batch["image"], self.weights, self.temperature
        if self.source_protect:
            h_s, h_i = self.source_net(x).float(), self.network(x).float()
            loss_s = mse(h_s, h_i.detach())
            self.manual_step(opt_s, loss_s)
            loss_i = mse(h_s.detach(), h_i) + w["res"] * residual_kl(h_s.detach(), h_i, tau)
            self.manual_step(opt_i, loss_i)
            self.log_dict({"train/loss_s": loss_s, "train/loss_i": loss_i})
        with torch.no_grad():
            h_i = self.network(x).float()  # I after its step: T's teacher
        h_t = self.target_net(self.occluded(x, h_i, batch["index"])).float()
        terms = {"train/loss_t_mse": mse(h_t, h_i)}  # T's terms, unweighted, logged for diagnosis
        loss_t = terms["train/loss_t_mse"]
        if self.target_relevant:
            batch_mean = gather_with_grad(h_t).mean(dim=0)  # the global batch's mean heatmap
            terms["train/loss_pc"] = pose_contrastive(h_i, h_t, tau)
            terms["train/loss_im"] = heatmap_im(h_t, tau, batch_mean)
            loss_t = loss_t + w["contrastive"] * terms["train/loss_pc"] + w["im"] * terms["train/loss_im"]
        self.log_dict({k: v.detach() for k, v in terms.items()}, on_step=False, on_epoch=True)
        self.manual_step(opt_t, loss_t)
        ema_update(self.network, self.target_net, self.momentum, buffers=False)
        self.log("train/loss", loss_t, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        self.log_ema_share(self.momentum, "step")
        for scheduler in self.lr_schedulers() or []:
            scheduler.step()
