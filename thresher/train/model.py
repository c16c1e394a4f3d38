"""The model: any timm architecture, its weight-decay groups, the freeze of its lowest layers."""

from __future__ import annotations

from pathlib import Path

import torch

from thresher.config import Recipe
from thresher.errors import ThresherError


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
        load_weights(model, recipe.pretrained, log)
    if recipe.grad_checkpointing:
        try:
            model.set_grad_checkpointing(True)
        except (AttributeError, NotImplementedError, AssertionError):
            log(f"{recipe.model} has no activation checkpointing: it stays off")
    return model


def load_weights(model: torch.nn.Module, path: Path, log=print) -> None:
    """Load a local state dict; tensors whose shape differs (a new classifier) are left out."""
    if not path.exists():
        raise ThresherError(f"pretrained weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ThresherError(f"{path} holds no tensor of {type(model).__name__}: wrong model?")
    model.load_state_dict(usable, strict=False)
    skipped = len(own) - len(usable)
    log(f"loaded {len(usable)} tensors from {path}" + (f"; {skipped} fresh" if skipped else ""))


def param_groups(model: torch.nn.Module, wd_backbone: float, wd_head: float) -> list[dict]:
    """Backbone and head with their own weight decay; none on norms and biases (1-d tensors)."""
    head = {id(p) for p in model.get_classifier().parameters()}
    groups = {"backbone": [], "head": [], "no_decay": []}
    for _, p in model.named_parameters():
        if p.ndim <= 1:
            groups["no_decay"].append(p)
        elif id(p) in head:
            groups["head"].append(p)
        else:
            groups["backbone"].append(p)
    decay = {"backbone": wd_backbone, "head": wd_head, "no_decay": 0.0}
    return [
        {"params": ps, "weight_decay": decay[name], "name": name}
        for name, ps in groups.items()
        if ps
    ]


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
