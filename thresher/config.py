"""Configuration as data: pydantic models with documented defaults, YAML in, clear errors out.

Every threshold thresher uses lives here, once. A YAML file overrides any field; an unknown key
or a bad value is reported by name in one line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from thresher.errors import ThresherError
from thresher.files import DEFAULT_MAX_FILE_BYTES

DEFAULT_WORKSPACE = Path("thresher-ws")
DEFAULT_EMBEDDER = "timm:mobilenetv3_large_100"
DEFAULT_OVERSAMPLE_FACTOR = 3.0  # the field report's x3 for minority classes


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
    max_file_bytes: int = Field(
        DEFAULT_MAX_FILE_BYTES,
        ge=1,
        description="A file larger than this (bytes, from stat, before reading) is recorded as "
        "'oversized' and never read: a 3 GB file named .jpg must not fill a worker's memory.",
    )
    batch_size: int = Field(64, ge=1, description="Files per worker task and per catalog commit.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where the embedder runs: auto is the GPU when there is one (half "
        "precision, a task's images per pass), else the CPU. Decoding stays on the CPU workers.",
    )
    embed_batch_size: int = Field(
        16,
        ge=1,
        description="Images per embedding forward pass on a CPU (on a GPU at least 256). On a "
        "CPU small batches stay in cache: 16 was faster than 64 for MobileNetV2 in a by-hand "
        "timing (not in bench/).",
    )


class CleanThresholds(_Strict):
    """Thresholds of the cleaning rules (the clean stage, issue #3, applies them)."""

    min_short_side_px: int = Field(
        512,
        ge=1,
        description="An image whose (effective) short side is below this is low resolution.",
    )
    upscaled_min_factor: float = Field(
        2.0,
        ge=1,
        description="An upscaled fake must be blown up at least this many times (short side / "
        "effective short side): soft genuine photos (storm clouds, macro shots) read 1.4-1.8 "
        "on the real bench, fakes 3 and more.",
    )
    blank_max_std: float = Field(
        4.0,
        ge=0,
        description="Largest per-channel pixel std (0-255) of a blank image: near-uniform "
        "everywhere. A drawing on white is not blank, however much white it has.",
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
    near_duplicate_max_chroma_shift: float = Field(
        7.5,
        ge=0,
        description="Largest change of the balance between colour channels (channel means less "
        "their average, 0-255) between two copies: crops and re-encodes move it up to 7.4 on "
        "the real bench, hue-turned drawings mostly beyond 10.",
    )
    near_duplicate_max_spread_shift: float = Field(
        10.0,
        ge=0,
        description="Largest change of a channel's pixel spread (std, 0-255) between two copies.",
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
        DEFAULT_OVERSAMPLE_FACTOR,
        ge=1,
        description="Most a minority class is oversampled in the balancing plan.",
    )


ExportAction = Literal["drop", "keep one", "relabel", "review", "keep"]


class ExportPolicy(_Strict):
    """What `thresher export` does with each issue kind, and how it splits and weighs.

    A person's decision from `thresher review` always wins over the policy.
    """

    actions: dict[str, ExportAction] = Field(
        default_factory=dict,
        description="Issue kind -> action, overriding the defaults of issue_model.py ACTIONS "
        "(drop; 'keep one' of a duplicate group; 'relabel' to the suggested label; 'review' = "
        "keep as is unless a person decided; 'keep' = ignore the issue). Example: "
        "{label_error: relabel, low_resolution: keep}.",
    )
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of each class put in the validation split."
    )
    seed: int = Field(0, description="Seed of the split (the same seed gives the same split).")
    oversample_factor: float = Field(
        DEFAULT_OVERSAMPLE_FACTOR,
        ge=1,
        description="Most a minority class is oversampled: the manifest's `weight` column.",
    )
    target_share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Instead of the factor: bring every class up to this share of the largest "
        "class (0.5 = at least half of it), however large the factor.",
    )
    min_class_files: int = Field(
        2, ge=1, description="A class with fewer exported files than this is left out, noted."
    )


class GuardConfig(_Strict):
    """The training guards' thresholds (thresher/guard/*.py documents each guard)."""

    enabled: bool = Field(True, description="All guards on (off only to measure their cost).")

    # numeric (guard/numeric.py)
    # Conservative: with small batches the gradient norm wanders 3-5x its median (seen with
    # batches of 8); explosions are orders of magnitude, or not finite at all.
    spike_z: float = Field(10.0, gt=0, description="Robust z (MAD units) above which a loss or "
                           "grad norm is a spike.")  # fmt: skip
    spike_ratio: float = Field(10.0, gt=1, description="...and this many times the median.")
    baseline_window: int = Field(100, ge=5, description="Good steps in the running baseline.")
    baseline_min_steps: int = Field(20, ge=1, description="No spike is called before this many.")
    max_consecutive_bad: int = Field(
        3, ge=1, description="Bad steps in a row (each skipped) before a rollback."
    )
    snapshot_every: int = Field(50, ge=1, description="Steps between in-memory good snapshots.")
    rollback_lr_factor: float = Field(
        0.5, gt=0, lt=1, description="The LR is multiplied by this at each rollback."
    )
    max_rollbacks: int = Field(3, ge=0, description="Rollbacks before the run stops, diagnosed.")
    min_amp_scale: float = Field(
        1e-4, gt=0, description="An fp16 GradScaler scale below this is a collapse, not noise."
    )
    divergence_factor: float = Field(
        100.0, gt=1, description="A loss this many times above both the first step's loss "
        "and ln(classes) is an explosion, finite or not.",
    )  # fmt: skip
    weight_norm_factor: float = Field(
        100.0, gt=1, description="Weights whose global norm grew this many times since the "
        "start have exploded (checked at each snapshot).",
    )  # fmt: skip
    max_skipped_share: float = Field(
        0.05, ge=0, le=1, description="Share of training samples whose user_transform raised "
        "(each skipped, counted) past which the run stops, diagnosed.",
    )  # fmt: skip
    # progress (guard/progress.py)
    plateau_patience: int = Field(
        5, ge=1, description="Evaluations without improvement before the convergence checks."
    )
    overfit_gap: float = Field(
        0.15, gt=0, le=1, description="Train - validation accuracy gap that warns of overfitting."
    )
    stop_on_overfit: bool = Field(False, description="Stop the run when it overfits.")
    far_loss_factor: float = Field(
        2.0, gt=1, description="A training loss this many times ln(classes) after warm-up (the "
        "median of the last logged ones) is a run that does not converge: named once, with the "
        "head's logit scale.",
    )  # fmt: skip
    # memory (guard/memory.py)
    memory: bool = Field(True, description="Watch host memory of the run and its workers.")
    memory_interval_s: float = Field(5.0, gt=0, description="Seconds between memory samples.")
    memory_warmup_s: float = Field(60.0, ge=0, description="Samples before this are ignored.")
    leak_mb_per_s: float = Field(1.0, gt=0, description="Growth rate that counts as a leak.")
    leak_sustain_s: float = Field(180.0, gt=0, description="...sustained this long.")
    leak_window_s: float = Field(120.0, gt=0, description="Trailing window of each slope fit.")
    tracemalloc: bool = Field(
        False, description="Name the allocating lines of a main-process leak (slow)."
    )
    recycle_workers_on_leak: bool = Field(
        True, description="Restart the DataLoader workers when one of them leaks."
    )
    recycle_workers_every: int = Field(
        0, ge=0, description="Restart the DataLoader workers every N steps (0 = only on a leak)."
    )
    # thermal (guard/thermal.py)
    thermal_sensor: str = Field(
        "nvml",
        description="nvml (the first GPU), off, or 'module:callable' returning an object with "
        "read() -> thresher.guard.thermal.Reading.",
    )
    thermal_warn_c: float = Field(83.0, description="Log above this GPU temperature.")
    thermal_pause_c: float = Field(88.0, description="Pause training at or above this.")
    thermal_resume_c: float = Field(80.0, description="Resume below this.")
    thermal_poll_s: float = Field(10.0, gt=0, description="Seconds between sensor reads.")


class Recipe(_Strict):
    """A training recipe. The defaults are the reported best configuration (MISSION.md)."""

    # model
    model: str = Field("resnet50", description="Any timm model name (resnet50, convnext_tiny...).")
    pretrained: bool | Path = Field(
        False,
        description="true: timm's pretrained weights (downloads); a path: a local state dict "
        "(.pth/.safetensors), its classifier replaced when the class count differs.",
    )
    image_size: int = Field(224, ge=16, description="Training and evaluation image size, px.")
    drop_rate: float = Field(0.5, ge=0, lt=1, description="Dropout before the classifier head.")
    drop_path_rate: float = Field(0.2, ge=0, lt=1, description="Stochastic depth.")
    grad_checkpointing: bool = Field(
        True, description="Activation checkpointing (timm set_grad_checkpointing): less memory."
    )
    # optimisation
    optimizer: Literal["lion", "adamw", "sgd"] = Field("lion", description="Optimizer.")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate, reached after warm-up.")
    min_lr: float = Field(0.0, ge=0, description="Learning rate at the end of the cosine.")
    betas: tuple[float, float] = Field((0.9, 0.99), description="Lion/AdamW betas.")
    weight_decay_backbone: float = Field(1e-4, ge=0, description="Weight decay of the backbone.")
    weight_decay_head: float = Field(1e-3, ge=0, description="Weight decay of the classifier.")
    head_lr: float | None = Field(
        None,
        gt=0,
        description="Peak learning rate of the classifier head (null = lr); it follows the same "
        "warm-up and cosine. A fresh head on pretrained weights learns faster than the backbone "
        "should move: fine-tuning gives it 10x.",
    )
    head_init: Literal["zero", "timm"] = Field(
        "zero",
        description="A fresh classifier head on pretrained weights (the class count differs): "
        "zero (every class equally likely, first loss ln(classes)) or timm's own init.",
    )
    head_only_fraction: float = Field(
        0.0,
        description="The first share of steps (0 to 0.5) in which only the classifier head "
        "trains: the backbone's weights are fixed and its batch-norm statistics and stochastic "
        "depth are in evaluation mode, as for a linear probe; then the whole network trains "
        "(LP-FT, Kumar et al. 2022: a head fitted first distorts the pretrained features less).",
    )
    warmup_steps: int = Field(500, ge=0, description="Linear warm-up, in optimizer steps.")
    total_steps: int = Field(
        50_000, ge=1, description="Optimizer steps in the run (cosine decay ends here)."
    )
    freeze_last_fraction: float = Field(
        0.1, ge=0, le=1, description="Freeze the lowest layers for this last share of steps."
    )
    freeze_groups: int = Field(
        2,
        ge=0,
        description="How many of the lowest layer groups (timm group_matcher, coarse: stem, "
        "then stages) the freeze covers.",
    )
    label_smoothing: float = Field(0.15, ge=0, lt=1, description="Label smoothing.")
    grad_clip: float | None = Field(
        1.0, gt=0, description="Clip the global gradient norm (unscaled) to this; null = off."
    )
    grad_accum: int = Field(4, ge=1, description="Micro-batches per optimizer step.")
    batch_size: int = Field(64, ge=1, description="Images per micro-batch.")
    amp: Literal["fp16", "bf16", "off"] = Field(
        "fp16",
        description="Mixed precision. fp16 (with a GradScaler) needs CUDA; on a CPU it falls "
        "back to float32 and says so; bf16 runs on both.",
    )

    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description="Train in channels_last (NHWC) memory format: the fast path of tensor-core "
        "convolutions (ResNet-50 AMP on an H200: 4,442 images/s against 2,818, issue #13). "
        "auto: on for a model with 2-D convolutions on CUDA, off on a CPU; true / false force it.",
    )

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, v):
        return "off" if v is False else v  # YAML reads a bare `off` as false

    # augmentation and balance
    crop_scale: tuple[float, float] = Field(
        (0.5, 1.0), description="RandomResizedCrop scale range (reported +2.1 over (0.8, 1.0))."
    )
    rotation: float = Field(30.0, ge=0, le=180, description="Random rotation, degrees.")
    color_jitter: float = Field(
        0.2, ge=0, description="ColorJitter brightness/contrast/saturation."
    )
    hflip: float = Field(0.5, ge=0, le=1, description="Horizontal flip probability.")
    user_transform: str | None = Field(
        None,
        description="'module:callable' applied to each sample in the DataLoader workers after "
        "the crop and flip (PIL image -> PIL image, or a (3, H, W) uint8 tensor, or a float "
        "tensor in [0, 1]), before rotation, colour jitter and normalisation (those run batched "
        "on the training device; the jitter clamps to [0, 1]).",
    )
    oversample: bool = Field(
        True, description="Sample by the manifest's `weight` column (the balancing plan)."
    )
    cutmix: Literal["minority", "timm", "off"] = Field(
        "minority",
        description="minority: paste minority-class patches onto majority images; timm: "
        "timm's Mixup/CutMix; off.",
    )
    cutmix_prob: float = Field(0.5, ge=0, le=1, description="Chance a batch is cut-mixed.")
    cutmix_alpha: float = Field(1.0, gt=0, description="Beta(alpha, alpha) of the patch area.")
    mixup_alpha: float = Field(
        0.0, ge=0, description="With cutmix: timm, also Mixup with this alpha (0 = CutMix only)."
    )
    minority_below: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A class is a minority when its count is below this share of the largest.",
    )
    # running
    seed: int = Field(0, description="One seed for everything (ranks, sampler, augmentation).")
    sync_batchnorm: bool = Field(
        False,
        description="With several processes on GPUs: batch-norm statistics over the global "
        "batch (SyncBatchNorm), not per process. Needs CUDA; ignored, with a note, on CPUs.",
    )
    workers: int = Field(4, ge=0, description="DataLoader worker processes.")
    eval_every: int = Field(1000, ge=1, description="Evaluate every this many optimizer steps.")
    checkpoint_every: int = Field(
        1000, ge=1, description="Write a checkpoint every this many optimizer steps."
    )
    log_every: int = Field(10, ge=1, description="Metrics line every this many optimizer steps.")
    tensorboard: bool = Field(False, description="Also write TensorBoard events (if installed).")
    guards: GuardConfig = Field(default_factory=GuardConfig, description="The training guards.")

    @model_validator(mode="after")
    def _coherent(self):
        """Values each valid alone but wrong together, refused before anything is built."""
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas {list(self.betas)}: each must be in [0, 1), e.g. [0.9, 0.99]")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(
                f"crop_scale {list(self.crop_scale)}: needs 0 < low <= high <= 1, e.g. [0.5, 1.0]"
            )
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr:g} is above lr {self.lr:g}")
        if not 0 <= self.head_only_fraction <= 0.5:
            raise ValueError(
                f"head_only_fraction {self.head_only_fraction:g}: the share of steps that train "
                "the head alone must be in [0, 0.5] (the rest fine-tunes the whole network), "
                "e.g. 0.25"
            )
        if self.warmup_steps > self.total_steps:
            raise ValueError(
                f"warmup_steps {self.warmup_steps} is more than total_steps {self.total_steps}"
            )
        if self.image_size > MAX_IMAGE_SIZE:
            # Checked before a tensor exists: at 100,000 px one float32 image alone is 120 GB.
            gb = self.batch_size * 3 * self.image_size**2 * 4 / 1e9
            raise ValueError(
                f"image_size {self.image_size} px is over {MAX_IMAGE_SIZE}: one batch of "
                f"{self.batch_size} input images alone would be {gb:,.0f} GB"
            )
        return self

    @property
    def head_only_steps(self) -> int:
        """Optimizer steps at the start in which only the head trains (head_only_fraction)."""
        return math.ceil(self.total_steps * self.head_only_fraction)


M = TypeVar("M", bound=BaseModel)

# Training images larger than this are refused (ImageNet models train at 224-512 px).
MAX_IMAGE_SIZE = 4096


class CostOption(_Strict):
    """One way to pay for a run: GPUs rented by the hour, or owned and powered (thresher cost)."""

    name: str = Field(..., description="What the table calls it.")
    gpu: str = Field(
        "A100",
        description="A GPU of thresher.cost.RATES (A100, V100, RTX 4090, RTX 3090) or any "
        "name with images_per_s_per_gpu.",
    )
    count: int = Field(1, ge=1, description="GPUs.")
    images_per_s_per_gpu: float | None = Field(
        None, gt=0, description="Training images/s of one GPU for this plan (default: RATES)."
    )
    scaling: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Data-parallel efficiency from 2 GPUs on (NVIDIA measured 0.84 on 8 A100s, "
        "a 2x RTX 4090 box 0.945).",
    )
    price_per_gpu_hour: float = Field(0.0, ge=0, description="Rent per GPU-hour (cloud).")
    watts_per_gpu: float | None = Field(
        None, ge=0, description="Power draw of one GPU under training (default: its TDP)."
    )
    system_watts: float = Field(0.0, ge=0, description="The rest of the machine (CPU, disks).")
    electricity_per_kwh: float = Field(0.0, ge=0, description="Electricity price (owned GPUs).")
    purchase_price_per_gpu: float = Field(
        0.0, ge=0, description="Purchase price of one GPU, amortised over lifetime_years."
    )
    lifetime_years: float = Field(3.0, gt=0, description="Years the purchase is spread over.")


def _default_cost_options() -> list[CostOption]:
    # The field report's two options. $4.2 per A100-hour is the report's figure; $0.16/kWh
    # about the 2024 US residential average (EIA); $1,599 the RTX 4090's launch price.
    return [
        CostOption(name="cloud: 4x A100", gpu="A100", count=4, price_per_gpu_hour=4.2),
        CostOption(
            name="local: 2x RTX 4090",
            gpu="RTX 4090",
            count=2,
            system_watts=150,
            electricity_per_kwh=0.16,
            purchase_price_per_gpu=1599,
        ),
    ]


class CostPlan(_Strict):
    """A training plan and the options to price it on (thresher cost --options FILE.yaml)."""

    images: int = Field(1_000_000, ge=1, description="Training images.")
    epochs: float = Field(90.0, gt=0, description="Passes over them (unless steps is given).")
    steps: int | None = Field(None, ge=1, description="Optimizer steps, instead of epochs.")
    batch_size: int = Field(256, ge=1, description="Global batch (with steps).")
    model: str = Field("resnet50", description="timm model name.")
    image_size: int = Field(224, ge=16, description="Training image size, px.")
    currency: str = Field("$", description="The prices' currency, as printed.")
    options: list[CostOption] = Field(default_factory=_default_cost_options)
    loader_images_per_s: float | None = Field(
        None,
        gt=0,
        description="Images/s one training process's DataLoader delivers (`thresher doctor "
        "--recipe R --data D` measures it): each GPU trains at most this fast, whatever its "
        "step rate. null: the loader is assumed to keep up.",
    )
    machine_watts: float = Field(
        0.0, ge=0, description="With --measure: this machine's draw while training, watts."
    )
    machine_electricity_per_kwh: float = Field(
        0.0, ge=0, description="With --measure: this machine's electricity price."
    )


def load_yaml(path: Path, model: type[M]) -> M:
    """Read a YAML file into `model`, naming the offending key in one line on any error."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ThresherError(f"config file not found: {path}") from None
    except OSError as e:
        raise ThresherError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ThresherError(
            f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}): "
            "save it as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ThresherError(f"{path}{where}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ThresherError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ThresherError(f"{path}: expected a mapping of keys to values at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ThresherError(f"{path}: {describe_validation_error(e, model)}") from None


def _nearest_field(model: type[BaseModel], loc: tuple) -> str | None:
    """The field of the (nested) model at `loc[:-1]` whose name is closest to `loc[-1]`."""
    import difflib

    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        inner = field and field.annotation
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return None
        model = inner
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return close[0] if close else None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice (YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.MarkedYAMLError(
                    problem=f"the key {key!r} is given twice", problem_mark=key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def describe_validation_error(e: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line per problem, each naming the key: 'unknown key "lr_max"' or 'view_px: ...'.

    With `model`, an unknown key gets the nearest field name: 'did you mean "max_lr"?'.
    """
    parts = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            near = _nearest_field(model, err["loc"]) if model else None
            parts.append(f'unknown key "{key}"' + (f' (did you mean "{near}"?)' if near else ""))
        elif err["type"] == "value_error" and not err["loc"]:  # a model validator's own words
            parts.append(str(err["msg"]).removeprefix("Value error, "))
        else:
            parts.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)
