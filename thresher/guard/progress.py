"""Progress guards: a run that stopped learning, and a run that memorises instead of learning.

Non-convergence. What it catches: the validation accuracy has not improved for
`plateau_patience` evaluations. What it does: runs quick checks and says which failed: can the
model overfit one batch (if not: a bug, frozen weights or a learning rate far off)? Is the loss
near log(classes) (learning nothing)? Does the loss curve say the LR is too high (rising or
jumping) or too low (nearly flat)? Are parameters frozen that the recipe does not freeze? Are
the labels near random (the clean stage's label-error share)? Costs: nothing until it fires;
then about `overfit_batch_steps` extra steps on one batch, on a copy of the model. When wrong:
a run in a long, legitimate plateau before a schedule drop is flagged early; the checks then
report nothing wrong, which is itself the answer.

Far above chance. What it catches: after warm-up, the median of the last logged training
losses is above `far_loss_factor` x ln(classes), where a model that knows nothing sits (issue
#17: a fresh head with timm's init on ImageNet features started at 13.8 for 8 classes and Lion
took hundreds of steps to come back). What it does: names it once, with the logit scale of the
last batch as evidence (logits a few units apart are a head or LR problem, not the data).
Costs: one forward pass of one batch, once. When wrong: heavy label smoothing or mixing keeps
the loss up, but never at twice ln(classes).

Overfitting. What it catches: the train-validation accuracy gap above `overfit_gap` and
growing over the last evaluations (the field report: 99% against 62%). What it does: warns,
names the regularisers that are off, keeps the best checkpoint (best.pt, always kept), and
stops the run when `stop_on_overfit`. Costs: the training accuracy of the batches, one argmax
per micro-batch. When wrong: under heavy augmentation or CutMix, training accuracy reads low
and hides a gap; with label smoothing it never reaches 100%.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from thresher.config import Recipe
from thresher.guard.hooks import Event, Hook, Verdict


def plateaued(accuracies: list[float], patience: int, min_delta: float = 1e-3) -> bool:
    """True when the last `patience` evaluations did not beat the best one before them."""
    if len(accuracies) <= patience:
        return False
    best_before = max(accuracies[:-patience])
    return max(accuracies[-patience:]) < best_before + min_delta


def overfitting(train_acc: list[float], val_acc: list[float], gap: float, trend: int = 3) -> bool:
    """True when train - val exceeds `gap` now and has grown over the last `trend` evaluations."""
    if len(train_acc) < trend or len(val_acc) < trend:
        return False
    gaps = np.array(train_acc[-trend:]) - np.array(val_acc[-trend:])
    return bool(gaps[-1] > gap and gaps[-1] >= gaps[0])


def regularisers_off(r: Recipe) -> list[str]:
    """The recipe's regularisers that are off or weak, for the overfitting warning."""
    off = []
    if r.drop_rate == 0:
        off.append("dropout (drop_rate)")
    if r.drop_path_rate == 0:
        off.append("stochastic depth (drop_path_rate)")
    if r.label_smoothing == 0:
        off.append("label smoothing")
    if r.weight_decay_backbone == 0 and r.weight_decay_head == 0:
        off.append("weight decay")
    if r.cutmix == "off":
        off.append("CutMix")
    if r.crop_scale[0] >= 0.8:
        off.append(f"strong crops (crop_scale starts at {r.crop_scale[0]})")
    if r.rotation == 0 and r.color_jitter == 0:
        off.append("rotation and colour jitter")
    return off


def loss_shape(losses: list[float]) -> str | None:
    """What the training-loss curve says about the LR: 'too high', 'too low' or None."""
    x = np.asarray([v for v in losses if math.isfinite(v)], dtype=np.float64)
    if len(x) < 10:
        return None
    half = len(x) // 2
    first, second = x[:half].mean(), x[half:].mean()
    jumpy = np.median(np.abs(np.diff(x))) > 0.5 * np.median(x)
    if second > first * 1.05 or jumpy:
        return "too high: the training loss rises or jumps"
    if second > first * 0.98:
        return "too low (or the model cannot learn): the training loss is nearly flat"
    return None


def can_overfit_batch(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 30, lr: float = 1e-3
) -> tuple[bool, float, float]:
    """Train a copy of the model on one batch: (does the loss fall below half, first, last).

    A model that cannot memorise 16 images has a bug, frozen weights or a broken input; Adam
    at 1e-3 is used whatever the recipe, so the answer does not depend on the recipe's LR.
    """
    m = copy.deepcopy(model).train()
    params = [p for p in m.parameters() if p.requires_grad]
    if not params:
        return False, float("nan"), float("nan")
    opt = torch.optim.Adam(params, lr=lr)
    first = last = float("nan")
    for i in range(steps):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i == 0:
            first = loss.item()
        last = loss.item()
    return bool(last < 0.5 * first), first, last


def far_above_chance(
    losses: list[float], n_classes: int, factor: float, last: int = 5
) -> float | None:
    """The median of the last `last` losses when it is above `factor` x ln(classes), else None."""
    recent = [v for v in losses[-last:] if math.isfinite(v)]
    if len(recent) < min(3, last) or n_classes < 2:
        return None
    med = float(np.median(recent))
    return med if med > factor * math.log(n_classes) else None


def logit_scale(model: torch.nn.Module, x: torch.Tensor) -> float:
    """The standard deviation of the model's logits on `x` in training mode (what the loss saw)."""
    with torch.no_grad():
        return float(model(x[:16]).float().std())


def diagnose_plateau(
    model: torch.nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    train_losses: list[float],
    n_classes: int,
    frozen_by_recipe: set[str],
    label_error_share: float | None,
) -> list[str]:
    """Run the quick checks; return one finding per line, the failures first."""
    findings = []
    x, y = batch
    fits, first, last = can_overfit_batch(model, x[:16], y[:16])
    if not fits:
        findings.append(
            f"cannot overfit one batch of {min(16, len(y))} images (loss {first:.3f} -> "
            f"{last:.3f} in 30 Adam steps): look for a bug, frozen weights or broken inputs"
        )
    recent = [v for v in train_losses[-20:] if math.isfinite(v)]
    if recent and abs(np.mean(recent) - math.log(n_classes)) < 0.1 * math.log(n_classes):
        findings.append(
            f"the loss ({np.mean(recent):.3f}) sits near log({n_classes}) = "
            f"{math.log(n_classes):.3f}: the model predicts uniformly, it is learning nothing"
        )
    shape = loss_shape(train_losses)
    if shape:
        findings.append(f"the learning rate looks {shape}")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    unexpected = [n for n in frozen if n not in frozen_by_recipe]
    if unexpected:
        findings.append(
            f"{len(unexpected)} parameter tensors are frozen that the recipe does not freeze "
            f"(first: {unexpected[0]})"
        )
    if label_error_share is not None and label_error_share > 0.3:
        findings.append(
            f"clean flagged {100 * label_error_share:.0f}% of the labels as errors: the labels "
            "may be near random"
        )
    if fits:
        findings.append("the model can overfit one batch: the code and inputs can learn")
    return findings


class ProgressGuard(Hook):
    """After each evaluation: is the run overfitting, has it stopped learning, and why."""

    name = "progress"

    def __init__(
        self,
        recipe: Recipe,
        n_classes: int,
        frozen_by_recipe: list[str],
        label_error_share: float | None,
    ):
        self.recipe, self.cfg, self.n_classes = recipe, recipe.guards, n_classes
        self.frozen_by_recipe = set(frozen_by_recipe)
        self.label_error_share = label_error_share
        self.val: list[float] = []
        self.train: list[float] = []
        self.losses: list[float] = []
        self.warned: set[str] = set()
        self.after_warmup: list[float] = []  # logged losses past warm-up, for far_above_chance

    def after_step(self, state, record: dict | None) -> Verdict:
        """Keeps the logged losses; names a loss far above chance after warm-up, once."""
        v = Verdict()
        if record is None:
            return v
        self.losses.append(record["loss"])  # what the LR diagnosis reads
        if state.step <= self.recipe.warmup_steps or "far" in self.warned:
            return v
        self.after_warmup.append(record["loss"])
        med = far_above_chance(self.after_warmup, self.n_classes, self.cfg.far_loss_factor)
        if med is None:
            return v
        self.warned.add("far")
        chance = math.log(self.n_classes)
        rng = torch.get_rng_state()  # dropout in the forward pass must not shift the run
        scale = logit_scale(state.model, state.batch[0]) if state.batch is not None else None
        torch.set_rng_state(rng)
        evidence = f"logits spread {scale:.1f} (std) on the last batch" if scale else "no batch"
        v.events.append(Event(
            "far_from_chance",
            f"after warm-up the training loss ({med:.2f}) is {med / chance:.1f}x ln("
            f"{self.n_classes}) = {chance:.2f}, where a model that knows nothing sits; {evidence}"
            ": the classifier head is far off (a fresh head with a large init: head_init zero) "
            "or the learning rate too high for the optimizer (Lion takes 3-10x less than "
            "AdamW: thresher train --fit-to-data)",
        ))  # fmt: skip
        return v

    def after_eval(self, state, evaluation: dict) -> Verdict:
        """Overfitting (an event, and a finish with stop_on_overfit), then a plateau, diagnosed."""
        acc, train_acc = evaluation["accuracy"], evaluation["train_accuracy"]
        if self.val and acc > max(self.val):
            self.warned.discard("plateau")  # a new best: the next plateau is a new one
        self.val.append(acc)
        self.train.append(train_acc)
        v = Verdict()
        if "overfit" not in self.warned and overfitting(self.train, self.val, self.cfg.overfit_gap):
            self.warned.add("overfit")
            off = ", ".join(regularisers_off(self.recipe)) or "none"
            stop = self.cfg.stop_on_overfit
            v.events.append(Event(
                "overfit",
                f"train accuracy {train_acc:.3f} vs validation {acc:.3f}, and the gap grows; "
                f"best.pt keeps the best ({state.best or max(self.val):.4f}); regularisers "
                f"off: {off}" + ("; stopping (stop_on_overfit)" if stop else ""),
            ))  # fmt: skip
            if stop:
                v.action, v.reason = "finish", "overfitting"
        if "plateau" not in self.warned and plateaued(self.val, self.cfg.plateau_patience):
            self.warned.add("plateau")
            rng = torch.get_rng_state()  # the checks must not shift the run's RNG
            cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
            frozen = self.frozen_by_recipe if state.frozen else set()
            if state.step <= self.recipe.head_only_steps:  # the head-only phase fixes the rest
                frozen = frozen | {n for n, q in state.model.named_parameters()
                                   if not q.requires_grad}  # fmt: skip
            findings = diagnose_plateau(state.model, state.batch, self.losses, self.n_classes,
                                        frozen, self.label_error_share)  # fmt: skip
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
            v.events.append(Event(
                "plateau",
                f"no better validation accuracy for {self.cfg.plateau_patience} evaluations: "
                + "; ".join(findings),
            ))  # fmt: skip
        return v

    def state_dict(self) -> dict:
        return {"val": self.val, "train": self.train, "losses": self.losses[-200:]}

    def load_state_dict(self, state: dict) -> None:
        self.val, self.train = list(state["val"]), list(state["train"])
        self.losses = list(state["losses"])
