"""The one training loop: search trials, transfer runs and benchmarks all use it.

The data set stays on the device as uint8; each batch is sliced by index,
turned into floats in [0, 1], augmented on the device and fed to the model.
The loss sees targets ``y`` (B, C) and softmax probabilities ``p`` (B, C).
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from optiloss.errors import OptilossError

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
AugmentationFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


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
    """The name of a registered :class:`Recipe`: ``"adamw"`` (:class:`Recipe` itself) or a
    surrogate's own (:data:`RECIPES`), which may read ``learning_rate`` and ``weight_decay`` its way."""


class RunHooks:
    """A recipe's state and hooks for one training run; these do nothing.

    :func:`train` calls :meth:`start_epoch` before each epoch's first batch and
    :meth:`after_step` after each optimiser step (with the 1-based count of steps so far), and
    saves :meth:`state_dict` in checkpoints, restored by :meth:`load_state_dict` on a resume.
    """

    def start_epoch(self, epoch: int) -> None:
        """Called with the 0-based epoch before its first batch."""

    def after_step(self, step: int) -> None:
        """Called after optimiser step ``step`` (1-based) has been taken and the schedule advanced."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class Recipe:
    """How a model is optimised; this base class is AdamW, a linear warm-up over ``warmup_fraction``
    of the steps, then cosine decay to zero (the CNN surrogate's, WideResNet's and timm models').

    A surrogate that trains its own way subclasses it beside its network (``models/<name>.py``),
    overriding :meth:`optimizer`, :meth:`schedule` and :meth:`start` (per-run hooks: data-dependent
    initialisation, per-epoch and per-step work), and is registered under its :attr:`name`
    (:func:`register_recipe`). Recipes hold no per-run state; :meth:`start` returns it.
    """

    name: ClassVar[str] = "adamw"
    scale_free: ClassVar[bool] = True
    """Whether multiplying the loss by a positive constant leaves training unchanged (Adam's
    normalised steps: yes; plain SGD: no). The screen then treats such losses as duplicates."""

    def optimizer(
        self, model: nn.Module, settings: TrainSettings, device: torch.device
    ) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
        )

    def schedule(self, settings: TrainSettings, total_steps: int) -> Callable[[int], float]:
        """The learning-rate factor of step ``step`` (0-based) of ``total_steps``."""
        return _warmup_cosine(total_steps, settings.warmup_fraction)

    def start(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, total_steps: int
    ) -> RunHooks:
        """The run's hooks, once the model is on the device in its memory format and before the first
        step; ``images`` (uint8) and ``labels`` are the training set, for data-dependent initialisation."""
        return RunHooks()


RECIPES: dict[str, Recipe] = {Recipe.name: Recipe()}
"""Recipes by name: AdamW and those the surrogates register (:mod:`optiloss.models`)."""


def register_recipe(recipe: Recipe) -> None:
    """Make ``recipe`` available to :class:`TrainSettings` under its :attr:`~Recipe.name`."""
    RECIPES[recipe.name] = recipe


def recipe_named(name: str) -> Recipe:
    """The registered recipe ``name``; an unknown name is a :class:`ValueError` listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; registered: {', '.join(RECIPES)}") from None


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


COMPILE_BACKEND = "inductor"
"""The ``torch.compile`` backend of ``compile = true``."""
_compiled_models: weakref.WeakKeyDictionary[nn.Module, Callable[[torch.Tensor], torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def compiled(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile(model)``, made once per model object: training the same model again (after
    :func:`optiloss.models.reinitialise`) reuses its compiled graphs instead of compiling anew."""
    if model not in _compiled_models:
        _compiled_models[model] = torch.compile(model, backend=COMPILE_BACKEND)
    return _compiled_models[model]


@dataclass
class _Run:
    """The moving parts of one training run, for the steps of :func:`train`."""

    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    loss_of: LossFunction
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    hooks: RunHooks
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    mixed_precision: bool
    step: int = 0


def _prepare(
    model: nn.Module,
    loss_fn: LossFunction,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
    device: torch.device,
) -> _Run:
    """Memory format, compilation, and the optimiser, schedule and hooks of ``settings.recipe`` over
    every step."""
    mixed = compute_precision(settings, device) == "bf16"
    if mixed:
        model = model.to(memory_format=torch.channels_last)
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    loss_of = loss_fn
    if settings.compile:
        forward, loss_of = compiled(model), torch.compile(loss_fn, backend=COMPILE_BACKEND)
    batch_size = min(settings.batch_size, len(images))
    steps_per_epoch = len(images) // batch_size  # full batches only: BatchNorm needs more than one sample
    total_steps = settings.epochs * steps_per_epoch
    recipe = recipe_named(settings.recipe)
    optimizer = recipe.optimizer(model, replace(settings, batch_size=batch_size), device)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.schedule(settings, total_steps))
    hooks = recipe.start(model, images, labels, total_steps)
    return _Run(
        model, forward, loss_of, optimizer, schedule, hooks, batch_size, steps_per_epoch, total_steps, mixed
    )


def _resume(run: _Run, path: Path, device: torch.device, result: TrainResult) -> int:
    """Load a checkpoint into ``run`` and ``result``; returns the epoch to continue from.

    Only tensors and plain values are read (``weights_only``): a file that needs any other object
    unpickled is refused with an :class:`OptilossError`, and nothing in it runs."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise OptilossError(
            f"checkpoint {path} holds objects other than tensors and plain values, so it is not loaded "
            "(a checkpoint optiloss writes never does): delete it to train that run from its start"
        ) from None
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.schedule.load_state_dict(state["schedule"])
    # map_location moved every tensor to the device; the random states must be CPU byte tensors
    torch.set_rng_state(state["rng"].cpu())
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
    # checkpoints written before recipes had hooks kept the lookahead average at the top level
    legacy = {"lookahead": state["lookahead"]} if state.get("lookahead") is not None else {}
    run.hooks.load_state_dict(state.get("recipe", legacy))
    run.step = state["epoch"] * run.steps_per_epoch
    result.resumed_from_epoch = state["epoch"]
    result.history = state["history"]
    return state["epoch"]


def _train_epoch(
    run: _Run, images: torch.Tensor, labels: torch.Tensor, augmentation: Augmentation, epoch: int
) -> tuple[float, float]:
    """One pass over shuffled full batches; (mean loss, training accuracy), read once at the end."""
    device = images.device
    run.hooks.start_epoch(epoch)
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
        run.hooks.after_step(run.step)
        loss_sum += loss.detach()
        correct += (logits.argmax(1) == labels[index]).sum()
    return loss_sum.item() / run.steps_per_epoch, correct.item() / (run.steps_per_epoch * run.batch_size)


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
            "recipe": run.hooks.state_dict(),
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

    The recipe is the registered :class:`Recipe` named by ``settings.recipe``. Two exist:

    - ``"adamw"``, for the CNN surrogate, WideResNets and timm models: AdamW, a linear warm-up over
      ``warmup_fraction`` of the steps, then cosine decay to zero.
    - the SGD surrogate's own (registered with its network in :mod:`optiloss.models`): SGD with
      Nesterov momentum (fused on CUDA), learning rate and weight decay decoupled from momentum and
      batch size, BatchNorm biases at 64x the learning rate, a triangular schedule, a lookahead
      average pulled every 5 steps and once more at the last step, and a whitening layer set from a
      seeded class-mixed subset of the training images whose bias trains for 3 epochs.

    The recipe's :meth:`Recipe.start` sees the model and training set before the first step;
    ``augmentation.prepare`` sees the training set once and ``augmentation.start_epoch`` each epoch
    (:class:`Augmentation`; plain functions are wrapped).

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
        training_images = augmentation.prepare(images)  # before a resume restores the random state
        run = _prepare(model, loss_fn, images, labels, settings, device)
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
            mean_loss, train_accuracy = _train_epoch(run, training_images, labels, augmentation, epoch)
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
def stacked_accuracies(
    model: nn.Module,
    stacked: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    batch_size: int | None = None,
    mixed_precision: bool = True,
    flip_tta: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy of ``model`` on each of ``len(names)`` sets of uint8 images held one after another
    in ``stacked`` (each set labelled by ``labels``): the sets are scored together in batches of
    ``batch_size`` and the counts read back to the host once. ``mixed_precision`` as in
    :class:`TrainSettings`; with ``flip_tta``, the logits are the mean of the image's and its mirror
    image's (test-time augmentation). A model in eval mode scores an image the same whichever batch
    holds it, so the figures equal those of scoring each set on its own."""
    model.eval()
    device = labels.device
    batch_size = batch_size or scoring_batch_size(device)
    bf16 = mixed_precision and bf16_pays_off(device)
    predictions = torch.empty(len(stacked), dtype=torch.long, device=device)
    for start in range(0, len(stacked), batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            batch = to_float(stacked[start : start + batch_size])
            logits = model(batch)
            if flip_tta:
                logits = (logits + model(batch.flip(-1))) / 2
        predictions[start : start + len(batch)] = logits.argmax(1)
    counts = (predictions.view(len(names), len(labels)) == labels).sum(1).tolist()
    return {name: count / len(labels) for name, count in zip(names, counts)}


def accuracies(
    model: nn.Module,
    image_sets: dict[str, torch.Tensor],
    labels: torch.Tensor,
    batch_size: int | None = None,
    mixed_precision: bool = True,
    flip_tta: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy of ``model`` on each set of uint8 images (all labelled by ``labels``): the sets
    stacked and scored as :func:`stacked_accuracies` does (a caller scoring the same sets again keeps
    them stacked and calls that instead)."""
    sets = list(image_sets.values())
    stacked = sets[0] if len(sets) == 1 else torch.cat(sets)
    return stacked_accuracies(model, stacked, labels, list(image_sets), batch_size, mixed_precision, flip_tta)


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
