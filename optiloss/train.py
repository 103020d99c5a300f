"""The one training loop: search trials, transfer runs and benchmarks all use it.

The data set stays on the device as uint8; each batch is sliced by index,
turned into floats in [0, 1], augmented on the device and fed to the model.
The loss sees targets ``y`` (B, C) and softmax probabilities ``p`` (B, C).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
AugmentationFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
DATA_INITIALISATION_IMAGES = 5000
"""Training images handed to a model's ``initialise_from_data`` before training (airbench uses 5,000),
a class-mixed subset (:func:`class_mixed_subset`)."""
DATA_INITIALISATION_SEED = 0
"""Every run of a data set initialises from the same subset, as airbench's ``images[:5000]``."""


class Augmentation(nn.Module):
    """A training augmentation: ``(images in [0, 1], int64 labels) -> (images, targets y)``.

    :func:`train` calls :meth:`prepare` once on the uint8 training set before the first epoch
    (and again, from the same random state, on a resume) and :meth:`start_epoch` before each
    epoch; both do nothing here. Plain functions given to :func:`train` are wrapped in one.
    """

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """The training set as this augmentation starts from it (the same tensor, or a new one)."""
        return images

    def start_epoch(self, epoch: int) -> None:
        """Called with the 0-based epoch before its first batch."""


class _FunctionAugmentation(Augmentation):
    def __init__(self, function: AugmentationFunction) -> None:
        super().__init__()
        self.function = function

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.function(images, labels)


def class_mixed_subset(
    labels: torch.Tensor, count: int, seed: int = DATA_INITIALISATION_SEED
) -> torch.Tensor:
    """Indices of ``count`` examples drawn at random (seeded) with every class in proportion to its
    share of ``labels`` (largest remainders round the shares), in random order; all indices when
    ``count`` covers the set. Data sets stored class by class need this where a prefix would hold
    only the first classes."""
    total = len(labels)
    generator = torch.Generator().manual_seed(seed)
    if count >= total:
        return torch.randperm(total, generator=generator)
    labels = labels.cpu()
    classes, sizes = labels.unique(return_counts=True)
    exact = sizes.double() * count / total
    quota = exact.floor().long()
    remainder_order = (exact - quota).argsort(descending=True, stable=True)
    quota[remainder_order[: count - int(quota.sum())]] += 1
    order = torch.randperm(total, generator=generator)
    shuffled = labels[order]
    chosen = [order[shuffled == label][: int(share)] for label, share in zip(classes, quota)]
    picked = torch.cat(chosen)
    return picked[torch.randperm(len(picked), generator=generator)]


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings. ``mixed_precision`` turns on bf16 autocast for the model (the loss always
    runs in float32) and channels-last memory where they pay (:func:`bf16_pays_off`); ``compile``
    wraps the model and the loss in ``torch.compile``; ``deterministic`` asks torch for deterministic
    kernels. Built from a config by :meth:`optiloss.settings.RunSettings.train_settings`."""

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.1
    mixed_precision: bool = True
    compile: bool = False
    deterministic: bool = False
    recipe: str = "adamw"
    """``"adamw"``: AdamW, linear warm-up over ``warmup_fraction`` of the steps, cosine decay.
    ``"airbench"``: airbench94's SGD recipe (:class:`AirbenchRecipe`); ``learning_rate`` and
    ``weight_decay`` are then airbench's decoupled values per 1,024 examples (11.5 and 0.0153)."""


RECIPES = ("adamw", "airbench")


@dataclass(frozen=True)
class AirbenchRecipe:
    """airbench94's optimisation (Jordan, arXiv 2404.00498), for a loss averaged over the batch.

    SGD with Nesterov momentum; learning rate and weight decay decoupled from
    momentum and batch size (given per 1,024 examples); BatchNorm biases at 64x
    the learning rate; the learning rate rises from 0.2x to 1x over the first
    23 % of the steps, then falls linearly to 0.07x; every 5 steps the weights
    are pulled towards a lookahead average whose decay grows with the cube of
    the progress, and they end as that average; the whitening bias trains for
    the first 3 epochs only.
    """

    momentum: float = 0.85
    bias_scaler: float = 64.0
    warmup_share: float = 0.23
    start_factor: float = 0.2
    end_factor: float = 0.07
    lookahead_every: int = 5
    lookahead_decay: float = 0.95**5
    whiten_bias_epochs: int = 3

    def schedule(self, total_steps: int) -> Callable[[int], float]:
        warmup = max(1, int(total_steps * self.warmup_share))

        def factor(step: int) -> float:
            if step < warmup:
                share = step / warmup
                return self.start_factor * (1 - share) + share
            share = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return (1 - share) + self.end_factor * share

        return factor

    def optimizer(
        self, model: nn.Module, settings: TrainSettings, device: torch.device | None = None
    ) -> torch.optim.Optimizer:
        kilostep = 1024 * (1 + 1 / (1 - self.momentum))
        # airbench sums the loss over the batch; optiloss averages it, so the step is batch_size larger
        lr = settings.learning_rate / kilostep * settings.batch_size
        decay = settings.weight_decay * settings.batch_size / kilostep
        biases = getattr(model, "batchnorm_biases", list)()
        bias_ids = {id(parameter) for parameter in biases}
        others = [p for p in model.parameters() if id(p) not in bias_ids and p.requires_grad]
        bias_lr = lr * self.bias_scaler
        groups = [
            {"params": biases, "lr": bias_lr, "weight_decay": decay / bias_lr},
            {"params": others, "lr": lr, "weight_decay": decay / lr},
        ]
        # fused SGD: one kernel for every parameter's step where CUDA offers it
        fused = device is not None and device.type == "cuda"
        return torch.optim.SGD(
            [group for group in groups if group["params"]],
            momentum=self.momentum,
            nesterov=True,
            fused=fused or None,
        )


class Lookahead:
    """An exponential average of the model's floating-point state that the weights are pulled back
    onto; :meth:`update` is two ``torch._foreach_*`` calls over tensor lists made once."""

    def __init__(self, model: nn.Module) -> None:
        state = model.state_dict()  # detached views of the live parameters and buffers
        self.average = {name: value.detach().clone() for name, value in state.items()}
        floating = [name for name, value in state.items() if value.dtype.is_floating_point]
        self._live = [state[name] for name in floating]
        self._averaged = [self.average[name] for name in floating]

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        """average <- decay * average + (1 - decay) * weights; weights <- average."""
        torch._foreach_lerp_(self._averaged, self._live, 1 - decay)
        torch._foreach_copy_(self._live, self._averaged)

    @torch.no_grad()
    def load(self, average: dict[str, torch.Tensor]) -> None:
        """Restore a saved average (the dict of a checkpoint) into the tensors :meth:`update` uses."""
        for name, value in average.items():
            self.average[name].copy_(value)


@dataclass
class TrainResult:
    """What training produced. ``diverged`` says why training stopped early, if it did."""

    history: list[dict[str, float]] = field(default_factory=list)
    diverged: str | None = None
    seconds: float = 0.0
    resumed_from_epoch: int | None = None


@dataclass(frozen=True)
class Checkpointing:
    """Where :func:`train` saves its state, how often, and where it resumes from.

    A checkpoint holds model, optimizer and schedule state, the epoch, the
    history so far and torch's random state, so a resumed run continues the
    same batches and augmentations as an uninterrupted one. It is written after
    an epoch once ``every_seconds`` have passed since the last one was written
    (or since training began): 0 writes one after every epoch; a run shorter
    than ``every_seconds`` writes none, since saving would cost more than a
    rerun (a kill then loses at most about ``every_seconds`` of training).
    """

    save_to: Path | None = None
    resume_from: Path | None = None
    every_seconds: float = 0.0


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)  # a kill mid-write leaves the previous checkpoint intact


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch (and so Kornia, which has no generator argument) without leaking global state."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def bf16_pays_off(device: torch.device) -> bool:
    """Whether bf16 autocast with channels-last memory speeds the models up on ``device``: on CUDA,
    and on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX), where oneDNN's bf16 convolutions
    run about twice as fast as float32 ones; elsewhere bf16 is emulated and slower."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    native = [
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    return any(check is not None and check() for check in native)


def compute_precision(settings: TrainSettings, device: torch.device) -> str:
    """What :func:`train` computes the model in on ``device``: ``"bf16"`` or ``"float32"``."""
    return "bf16" if settings.mixed_precision and bf16_pays_off(device) else "float32"


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255)


@contextlib.contextmanager
def backend_flags(settings: TrainSettings, device: torch.device) -> Iterator[None]:
    """torch's global flags for one run, restored afterwards: deterministic kernels when asked for;
    otherwise, on CUDA, TF32 matrix products and tuned convolutions (same results to ~1e-3, much faster)."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.get_float32_matmul_precision(),
    )
    try:
        if settings.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.set_float32_matmul_precision("high")
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        torch.set_float32_matmul_precision(saved[3])


@dataclass
class _Run:
    """The moving parts of one training run, for the steps of :func:`train`."""

    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    loss_of: LossFunction
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    mixed_precision: bool
    airbench: AirbenchRecipe | None = None
    lookahead: Lookahead | None = None
    step: int = 0


def _prepare(
    model: nn.Module, loss_fn: LossFunction, count: int, settings: TrainSettings, device: torch.device
) -> _Run:
    """Memory format, compilation, and the optimiser and schedule of ``settings.recipe`` over every step."""
    mixed = compute_precision(settings, device) == "bf16"
    if mixed:
        model = model.to(memory_format=torch.channels_last)
    forward, loss_of = model, loss_fn
    if settings.compile:
        forward, loss_of = torch.compile(model), torch.compile(loss_fn)
    batch_size = min(settings.batch_size, count)
    steps_per_epoch = count // batch_size  # full batches only: BatchNorm needs more than one sample
    total_steps = settings.epochs * steps_per_epoch
    if settings.recipe == "airbench":
        recipe = AirbenchRecipe()
        optimizer = recipe.optimizer(model, replace(settings, batch_size=batch_size), device)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.schedule(total_steps))
        return _Run(
            model,
            forward,
            loss_of,
            optimizer,
            schedule,
            batch_size,
            steps_per_epoch,
            total_steps,
            mixed,
            airbench=recipe,
            lookahead=Lookahead(model),
        )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    factor = _warmup_cosine(total_steps, settings.warmup_fraction)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return _Run(model, forward, loss_of, optimizer, schedule, batch_size, steps_per_epoch, total_steps, mixed)


def _resume(run: _Run, path: Path, device: torch.device, result: TrainResult) -> int:
    """Load a checkpoint into ``run`` and ``result``; returns the epoch to continue from."""
    state = torch.load(path, map_location=device, weights_only=False)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.schedule.load_state_dict(state["schedule"])
    # map_location moved every tensor to the device; the random states must be CPU byte tensors
    torch.set_rng_state(state["rng"].cpu())
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
    if run.lookahead is not None:
        run.lookahead.load(state["lookahead"])
    run.step = state["epoch"] * run.steps_per_epoch
    result.resumed_from_epoch = state["epoch"]
    result.history = state["history"]
    return state["epoch"]


def _train_epoch(
    run: _Run, images: torch.Tensor, labels: torch.Tensor, augmentation: Augmentation, epoch: int
) -> tuple[float, float]:
    """One pass over shuffled full batches; (mean loss, training accuracy), read once at the end."""
    device = images.device
    if run.airbench is not None and hasattr(run.model, "whitening_bias"):
        run.model.whitening_bias().requires_grad = epoch < run.airbench.whiten_bias_epochs
    augmentation.start_epoch(epoch)
    order = torch.randperm(len(images), device=device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for step in range(run.steps_per_epoch):
        index = order[step * run.batch_size : (step + 1) * run.batch_size]
        batch, targets = augmentation(to_float(images[index]), labels[index])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.mixed_precision):
            logits = run.forward(
                batch.contiguous(memory_format=torch.channels_last) if run.mixed_precision else batch
            )
        loss = run.loss_of(targets, torch.softmax(logits.float(), dim=1))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.schedule.step()
        run.step += 1
        if run.lookahead is not None:
            _pull_to_lookahead(run)
        loss_sum += loss.detach()
        correct += (logits.argmax(1) == labels[index]).sum()
    return loss_sum.item() / run.steps_per_epoch, correct.item() / (run.steps_per_epoch * run.batch_size)


def _pull_to_lookahead(run: _Run) -> None:
    """airbench's two updates: every ``lookahead_every`` steps, and at the last step (both when the
    step count divides by the period), so the run ends as the average."""
    recipe = run.airbench
    if run.step % recipe.lookahead_every == 0:
        run.lookahead.update(run.model, decay=recipe.lookahead_decay * (run.step / run.total_steps) ** 3)
    if run.step == run.total_steps:
        run.lookahead.update(run.model, decay=1.0)


def _save_epoch(
    run: _Run, path: Path, epoch: int, history: list[dict[str, float]], device: torch.device
) -> None:
    _save_checkpoint(
        path,
        {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "schedule": run.schedule.state_dict(),
            "epoch": epoch,
            "history": history,
            "rng": torch.get_rng_state(),
            "lookahead": run.lookahead.average if run.lookahead else None,
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        },
    )


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: LossFunction,
    augmentation: Augmentation | AugmentationFunction,
    settings: TrainSettings,
    *,
    progress: bool = False,
    description: str = "epochs",
    checkpointing: Checkpointing | None = None,
    after_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on uint8 ``images`` and int64 ``labels`` (same device as the model).

    Two recipes, chosen by ``settings.recipe``:

    - ``"adamw"`` (the CNN surrogate, WideResNet, timm models): AdamW, linear warm-up over
      ``warmup_fraction`` of the steps, then cosine decay to zero.
    - ``"airbench"`` (the airbench surrogate, :class:`AirbenchRecipe`): SGD with Nesterov momentum
      (fused on CUDA), decoupled learning rate and weight decay, BatchNorm biases at 64x, a
      triangular schedule, a lookahead average every 5 steps and at the last step, the
      whitening bias trained for the first 3 epochs only.

    A model with ``initialise_from_data`` (airbench's whitening layer) first gets
    :data:`DATA_INITIALISATION_IMAGES` training images, a seeded class-mixed subset
    (:func:`class_mixed_subset`). ``augmentation.prepare`` then sees the training set once and
    ``augmentation.start_epoch`` each epoch (:class:`Augmentation`).

    A non-finite loss ends training
    at the end of that epoch with ``diverged`` set; the caller decides the penalty.
    With ``checkpointing``, the state is saved after epochs as :class:`Checkpointing` says and, when
    ``resume_from`` exists, training continues from it (``result.resumed_from_epoch``).
    ``after_epoch`` sees each finished epoch's history row (epoch, loss, train_accuracy, seconds)
    before its checkpoint is saved; an exception it raises ends training and propagates.
    torch's global flags are as before when it returns.
    """
    started = time.perf_counter()
    device = images.device
    checkpointing = checkpointing or Checkpointing()
    if not isinstance(augmentation, Augmentation):
        augmentation = _FunctionAugmentation(augmentation)
    result = TrainResult()
    with backend_flags(settings, device):
        if hasattr(model, "initialise_from_data"):  # e.g. airbench's whitening layer
            subset = class_mixed_subset(labels, DATA_INITIALISATION_IMAGES).to(device)
            model.initialise_from_data(to_float(images[subset]))
        images = augmentation.prepare(images)  # before a resume restores the random state, as at the start
        run = _prepare(model, loss_fn, len(images), settings, device)
        first_epoch = 0
        if checkpointing.resume_from is not None and checkpointing.resume_from.exists():
            first_epoch = _resume(run, checkpointing.resume_from, device, result)
        run.model.train()
        last_saved = started
        for epoch in tqdm(
            range(first_epoch, settings.epochs),
            desc=description,
            leave=False,
            disable=not progress,
            initial=first_epoch,
            total=settings.epochs,
        ):
            mean_loss, train_accuracy = _train_epoch(run, images, labels, augmentation, epoch)
            result.history.append(
                {
                    "epoch": epoch + 1,
                    "loss": mean_loss,
                    "train_accuracy": train_accuracy,
                    "seconds": time.perf_counter() - started,
                }
            )
            if not math.isfinite(mean_loss):
                result.diverged = f"non-finite loss in epoch {epoch + 1}"
                break
            if after_epoch is not None:
                after_epoch(result.history[-1])
            now = time.perf_counter()
            if checkpointing.save_to is not None and now - last_saved >= checkpointing.every_seconds:
                _save_epoch(run, checkpointing.save_to, epoch + 1, result.history, device)
                last_saved = now
    result.seconds = time.perf_counter() - started
    return result


def scoring_batch_size(device: torch.device) -> int:
    """Images per forward pass when scoring: large on a GPU (few launches), moderate on a CPU."""
    return 5000 if device.type == "cuda" else 1024


@torch.no_grad()
def accuracies(
    model: nn.Module,
    image_sets: dict[str, torch.Tensor],
    labels: torch.Tensor,
    batch_size: int | None = None,
    mixed_precision: bool = True,
    flip_tta: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy of ``model`` on each set of uint8 images (all labelled by ``labels``), read
    back to the host once at the end; ``mixed_precision`` as in :class:`TrainSettings`. With
    ``flip_tta``, the logits are the mean of the image's and its mirror image's (test-time
    augmentation)."""
    model.eval()
    device = labels.device
    batch_size = batch_size or scoring_batch_size(device)
    bf16 = mixed_precision and bf16_pays_off(device)
    correct = torch.zeros(len(image_sets), dtype=torch.long, device=device)
    for row, images in enumerate(image_sets.values()):
        for start in range(0, len(images), batch_size):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                batch = to_float(images[start : start + batch_size])
                logits = model(batch)
                if flip_tta:
                    logits = (logits + model(batch.flip(-1))) / 2
            correct[row] += (logits.argmax(1) == labels[start : start + batch_size]).sum()
    counts = correct.tolist()
    return {name: count / len(labels) for name, count in zip(image_sets, counts)}


def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int | None = None,
    mixed_precision: bool = True,
    flip_tta: bool = False,
) -> float:
    """Top-1 accuracy of ``model`` on uint8 ``images`` (:func:`accuracies` of one set)."""
    return accuracies(model, {"images": images}, labels, batch_size, mixed_precision, flip_tta)["images"]
