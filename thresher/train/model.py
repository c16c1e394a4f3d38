"""The model: any timm architecture, its weight-decay groups, the freeze of its lowest layers."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch

from thresher.config import Recipe
from thresher.errors import ThresherError
from thresher.weights import LoadedWeights, head_names, load_file_into


def create_model(recipe: Recipe, num_classes: int, log=print) -> torch.nn.Module:
    """timm.create_model with the recipe's dropout and stochastic depth, weights as asked."""
    import timm

    if not timm.is_model(recipe.model):
        close = timm.list_models(f"*{recipe.model.split('_')[0]}*")[:8]
        raise ThresherError(
            f"unknown timm model {recipe.model!r}"
            + (f" (similar: {', '.join(close)})" if close else "")
        )
    kwargs = dict(num_classes=num_classes, drop_rate=recipe.drop_rate)
    if recipe.drop_path_rate:
        kwargs["drop_path_rate"] = recipe.drop_path_rate
    try:
        model = timm.create_model(recipe.model, pretrained=recipe.pretrained is True, **kwargs)
    except TypeError:
        # Not every architecture has stochastic depth; the run goes on without it, and says so.
        log(f"{recipe.model} takes no drop_path_rate: stochastic depth is off")
        kwargs.pop("drop_path_rate", None)
        model = timm.create_model(recipe.model, pretrained=recipe.pretrained is True, **kwargs)
    except Exception as e:  # a download that cannot happen offline, a hub error
        raise ThresherError(
            f"cannot get pretrained weights for {recipe.model}: {e}; give a local file as "
            "`pretrained: path/to/weights.pth`"
        ) from None
    if isinstance(recipe.pretrained, Path):
        loaded = load_weights(model, recipe.pretrained, log)
        fresh_head = bool(head_names(model) & set(loaded.fresh))
    else:
        # timm's own weights: the head is fresh when the class count differs from theirs.
        theirs = (getattr(model, "pretrained_cfg", None) or {}).get("num_classes")
        fresh_head = recipe.pretrained is True and theirs != num_classes
    if fresh_head and recipe.head_init == "zero":
        zero_head(model)
        log("the fresh classifier head starts at zero: first loss ln(classes)")
    if recipe.grad_checkpointing:
        try:
            model.set_grad_checkpointing(True)
        except (AttributeError, NotImplementedError, AssertionError):
            log(f"{recipe.model} has no activation checkpointing: it stays off")
    return model


def load_weights(model: torch.nn.Module, path: Path, log=print) -> LoadedWeights:
    """Load a local weights file (thresher.weights: by name, else by position); says what."""
    loaded = load_file_into(model, path)
    log(loaded.summary())
    return loaded


def zero_head(model: torch.nn.Module) -> None:
    """Zero the classifier's weights and bias: every class starts equally likely.

    timm's init of a fresh head (uniform +-1/sqrt(fan_out), 0.35 for 8 classes) on ImageNet
    features, with dropout 0.5 doubling them in training, starts the loss at 13.8 for 8
    classes (issue #17); Lion moves each weight by at most lr per step, so it takes hundreds
    of steps to come back. A zero head starts at ln(classes) and learns from the first step.
    """
    with torch.no_grad():
        for p in model.get_classifier().parameters():
            p.zero_()


def param_groups(
    model: torch.nn.Module, wd_backbone: float, wd_head: float, head_lr_scale: float = 1.0
) -> list[dict]:
    """Backbone and head with their own weight decay; none on norms and biases (1-d tensors).

    The head's tensors (its bias too) take `head_lr_scale` times the schedule's rate (timm's
    schedulers honour a group's `lr_scale`).
    """
    head = {id(p) for p in model.get_classifier().parameters()}
    groups = {"backbone": [], "head": [], "no_decay": [], "head_bias": []}
    for _, p in model.named_parameters():
        if id(p) in head:
            groups["head_bias" if p.ndim <= 1 else "head"].append(p)
        elif p.ndim <= 1:
            groups["no_decay"].append(p)
        else:
            groups["backbone"].append(p)
    decay = {"backbone": wd_backbone, "head": wd_head, "no_decay": 0.0, "head_bias": 0.0}
    scale = {"head": head_lr_scale, "head_bias": head_lr_scale}
    return [
        {"params": ps, "weight_decay": decay[name], "name": name}
        | ({"lr_scale": scale[name]} if scale.get(name, 1.0) != 1.0 else {})
        for name, ps in groups.items()
        if ps
    ]


def train_head_only(model: torch.nn.Module, on: bool, kept_frozen: Collection[str] = ()) -> int:
    """The head-only phase (head_only_fraction) on or off; returns the tensors that train.

    On: only the classifier's tensors take gradients, and every module below the root except
    the classifier is in evaluation mode, so the backbone is the fixed feature extractor a
    linear probe sees (ImageNet's batch-norm statistics, no stochastic depth). The root keeps
    the model's mode: timm applies the dropout before the head there. Off: every tensor trains
    again but those in `kept_frozen` (the lowest layers, when their freeze has begun).
    A frozen tensor takes no gradient, so Lion and AdamW neither move nor decay it, and its
    optimizer state only starts when it trains.
    """
    head = {id(p) for p in model.get_classifier().parameters()}
    head_modules = {id(m) for m in model.get_classifier().modules()}
    frozen = set(kept_frozen)
    n = 0
    for name, p in model.named_parameters():
        trains = id(p) in head or (not on and name not in frozen)
        p.requires_grad_(trains)
        if not trains:
            p.grad = None
        n += trains
    for m in model.modules():
        if m is not model and id(m) not in head_modules:
            m.training = model.training and not on
    return n


def lowest_layers(model: torch.nn.Module, groups: int) -> list[str]:
    """Names of the parameters in the `groups` lowest layer groups (timm's coarse group_matcher:
    the stem, then one group per stage)."""
    from timm.models import group_parameters

    if groups <= 0 or not hasattr(model, "group_matcher"):
        return []
    grouped = group_parameters(model, model.group_matcher(coarse=True))
    order = sorted(grouped)[:-1]  # the last group is the head: never frozen
    return [name for g in order[:groups] for name in grouped[g]]


def freeze(model: torch.nn.Module, names: list[str]) -> int:
    """Stop gradients of the named parameters; returns how many tensors were frozen."""
    wanted = set(names)
    n = 0
    for name, p in model.named_parameters():
        if name in wanted and p.requires_grad:
            p.requires_grad_(False)
            p.grad = None
            n += 1
    return n


def use_channels_last(setting: bool | str, device: torch.device, model: torch.nn.Module) -> bool:
    """The recipe's `channels_last` decided: auto is on for a convolutional net on CUDA."""
    if setting != "auto":
        return bool(setting)
    # A patch embedding (kernel == stride: a ViT's one conv) does not make a convolutional net.
    return device.type == "cuda" and any(
        isinstance(m, torch.nn.Conv2d) and tuple(m.kernel_size) != tuple(m.stride)
        for m in model.modules()
    )
