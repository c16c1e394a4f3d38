"""Configuration as data: pydantic models with documented defaults, YAML in, clear errors out.

Every threshold thresher uses lives here, once. A YAML file overrides any field; an unknown key
or a bad value is reported by name in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from thresher.errors import ThresherError

DEFAULT_WORKSPACE = Path("thresher-ws")
DEFAULT_EMBEDDER = "timm:mobilenetv3_large_100"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ScanConfig(_Strict):
    """How `thresher scan` decodes and measures each file."""

    view_px: int = Field(
        512,
        ge=64,
        description="Images are decoded to a view whose short side is at least this many pixels "
        "(JPEGs via libjpeg's DCT scaling, others by box reduction); every measurement is taken "
        "on that view, so a 4000 px JPEG is never decoded at full size. Effective resolution "
        "can be measured up to this size.",
    )
    max_image_pixels: int = Field(
        89_478_485,
        ge=1,
        description="Decompression-bomb guard: an image whose header claims more pixels than this "
        "is recorded as 'oversized' and never decoded (Pillow's own warning level).",
    )
    batch_size: int = Field(64, ge=1, description="Files per worker task and per catalog commit.")
    embed_batch_size: int = Field(
        16,
        ge=1,
        description="Images per embedding forward pass. On a CPU small batches stay in cache: "
        "16 was faster than 64 for MobileNetV2 in a by-hand timing (not in bench/).",
    )


class CleanThresholds(_Strict):
    """Thresholds of the cleaning rules (the clean stage, issue #3, applies them)."""

    min_short_side_px: int = Field(
        512,
        ge=1,
        description="An image whose (effective) short side is below this is low resolution.",
    )
    blank_max_std: float = Field(
        4.0, ge=0, description="Largest per-channel pixel std (0-255) of a blank image."
    )
    blank_min_dominant_share: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Share of pixels in one colour above which an image is near-blank.",
    )
    near_duplicate_max_hamming: int = Field(
        10, ge=0, le=64, description="Largest pHash Hamming distance between near-duplicates."
    )
    near_duplicate_max_dhash: int = Field(
        20, ge=0, le=64, description="Largest dHash distance confirming a pHash match."
    )
    near_duplicate_max_colour_shift: float = Field(
        12.0,
        ge=0,
        description="Largest difference of a channel's mean (0-255) between two copies: pHash "
        "alone pairs simple shapes on plain backgrounds.",
    )
    near_duplicate_min_cosine: float = Field(
        0.92,
        ge=0,
        le=1,
        description="Embedding cosine confirming a pHash match; halfway from "
        "it to 1 pairs copies whose hash moved (watermarks, crops).",
    )
    label_error_neighbours: int = Field(
        10, ge=1, description="Neighbours in the k-NN vote of the label-error check."
    )
    review_fraction: float = Field(
        0.08, ge=0, le=1, description="Share of the files put in the human review queue."
    )
    oversample_factor: float = Field(
        3.0, ge=1, description="Most a minority class is oversampled in the balancing plan."
    )


M = TypeVar("M", bound=BaseModel)


def load_yaml(path: Path, model: type[M]) -> M:
    """Read a YAML file into `model`, naming the offending key in one line on any error."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ThresherError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ThresherError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ThresherError(f"{path}: expected a mapping of keys to values at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ThresherError(f"{path}: {describe_validation_error(e)}") from None


def describe_validation_error(e: ValidationError) -> str:
    """One line per problem, each naming the key: 'unknown key "lr_max"' or 'view_px: ...'."""
    parts = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f'unknown key "{key}"')
        else:
            parts.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)
