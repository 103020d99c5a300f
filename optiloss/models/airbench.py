"""The airbench94 network (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
arXiv 2404.00498; KellerJordan/cifar10-airbench), written for optiloss.

A small VGG-like net: a frozen 2x2 convolution initialised by whitening patches
of the training images (its bias trains for the first epochs), then three
groups of conv-pool-BatchNorm-GELU-conv-BatchNorm-GELU (widths 64, 256, 256),
max-pooling, a bias-free linear head and a fixed 1/9 output scale. BatchNorm
weights are frozen at one; their biases train. The recipe that goes with it
(SGD with Nesterov momentum, decoupled hyperparameters, a 23 % warm-up then a
linear warm-down, a lookahead average of the weights) is :class:`AirbenchRecipe`;
label smoothing is a loss of the zoo, not part of the trainer, so the search can
find (or beat) it. :data:`SURROGATE` puts network, recipe and defaults together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from optiloss.data import class_mixed_subset
from optiloss.models.spec import Surrogate
from optiloss.train import Recipe, RunHooks, TrainSettings, to_float

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2
BATCHNORM_MOMENTUM = 0.6
OUTPUT_SCALE = 1 / 9
WHITEN_EPSILON = 5e-4
WHITENING_IMAGES = 5000
"""Training images the whitening layer is set from (airbench's ``images[:5000]``, here a seeded
class-mixed subset, since folder data sets are stored class by class)."""
MINIMUM_IMAGE_SIZE = 16
"""Below 16 px, the three poolings leave no pixel."""


class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm with airbench's momentum convention, weight frozen at one, trainable bias."""

    def __init__(self, features: int, momentum: float = BATCHNORM_MOMENTUM) -> None:
        super().__init__(features, eps=1e-12, momentum=1 - momentum)
        self.weight.requires_grad = False


class _Conv(nn.Conv2d):
    """3x3 'same' convolution without bias whose first ``in_channels`` filters start as identities."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__(inputs, outputs, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.dirac_(self.weight.data[: self.weight.size(1)])


class _ConvGroup(nn.Module):
    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.conv1, self.pool, self.norm1 = _Conv(inputs, outputs), nn.MaxPool2d(2), _BatchNorm(outputs)
        self.conv2, self.norm2, self.activation = _Conv(outputs, outputs), _BatchNorm(outputs), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """airbench94's network for 32x32 images in [0, 1] (normalised inside with CIFAR-10's statistics).

    Call :meth:`initialise_from_data` with training images before training: it sets the whitening
    convolution from their 2x2 patches (:class:`AirbenchRecipe` does it when training starts).
    ``width`` scales the three groups (64 gives airbench's 64/256/256). The whitening bias keeps
    ``requires_grad``; while :attr:`whitening_bias_trains` is False its gradient is dropped as soon as
    it is accumulated, so the optimiser skips it as if it were frozen, and a compiled forward never
    sees a flag change (no recompilation).
    """

    mean: torch.Tensor
    std: torch.Tensor
    whitening_bias_trains: bool = True

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        widths = [round(w * width / WIDTHS[0]) for w in WIDTHS]
        whiten_width = 2 * in_channels * WHITEN_KERNEL**2
        for name, values in (("mean", CIFAR_MEAN), ("std", CIFAR_STD)):
            self.register_buffer(name, torch.tensor(values[:in_channels]).view(1, -1, 1, 1), persistent=False)
        self.whiten = nn.Conv2d(in_channels, whiten_width, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        self.groups = nn.Sequential(
            _ConvGroup(whiten_width, widths[0]),
            _ConvGroup(widths[0], widths[1]),
            _ConvGroup(widths[1], widths[2]),
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        nn.init.zeros_(self.whitening_bias())
        self.whitening_bias().register_post_accumulate_grad_hook(self._drop_frozen_gradient)

    def _drop_frozen_gradient(self, bias: torch.Tensor) -> None:
        if not self.whitening_bias_trains:
            bias.grad = None

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.whiten(self.normalise(images)))
        x = self.groups(x)
        x = F.adaptive_max_pool2d(x, 1).flatten(1)  # airbench's MaxPool2d(3) on the 3x3 map of 32 px inputs
        return self.head(x) * OUTPUT_SCALE

    @torch.no_grad()
    def initialise_from_data(self, images: torch.Tensor) -> None:
        """Whitening filters from the 2x2 patches of ``images`` (float in [0, 1], N x C x H x W):
        the eigenvectors of the patch covariance scaled by 1/sqrt(eigenvalue + eps), and their negatives."""
        x = self.normalise(images.float())
        channels, (height, width) = x.shape[1], self.whiten.weight.shape[2:]
        patches = x.unfold(2, height, 1).unfold(3, width, 1).transpose(1, 3)
        patches = patches.reshape(-1, channels * height * width)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())
        eigenvalues, eigenvectors = eigenvalues.flip(0).float(), eigenvectors.T.flip(0).float()
        filters = eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + WHITEN_EPSILON)[:, None]
        filters = filters.reshape(-1, channels, height, width)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))

    def whitening_bias(self) -> nn.Parameter:
        """The whitening convolution's bias: trained for the first epochs, then frozen."""
        bias = self.whiten.bias
        assert isinstance(bias, nn.Parameter)  # the convolution is built with bias=True
        return bias

    def batchnorm_biases(self) -> list[nn.Parameter]:
        """The parameters airbench trains with a 64x learning rate (and no extra weight decay)."""
        return [module.bias for module in self.modules() if isinstance(module, _BatchNorm)]


@dataclass(frozen=True)
class AirbenchRecipe(Recipe):
    """airbench94's optimisation (Jordan, arXiv 2404.00498), for a loss averaged over the batch.

    SGD with Nesterov momentum; learning rate and weight decay decoupled from
    momentum and batch size (given per 1,024 examples); BatchNorm biases at 64x
    the learning rate; the learning rate rises from 0.2x to 1x over the first
    23 % of the steps, then falls linearly to 0.07x; every 5 steps the weights
    are pulled towards a lookahead average whose decay grows with the cube of
    the progress, and they end as that average; the whitening bias trains for
    the first 3 epochs only.
    """

    name: ClassVar[str] = "airbench"
    scale_free: ClassVar[bool] = False  # plain SGD: a loss twice as large takes steps twice as long

    momentum: float = 0.85
    bias_scaler: float = 64.0
    warmup_share: float = 0.23
    start_factor: float = 0.2
    end_factor: float = 0.07
    lookahead_every: int = 5
    lookahead_decay: float = 0.95**5
    whiten_bias_epochs: int = 3

    def schedule(self, settings: TrainSettings, total_steps: int) -> Callable[[int], float]:
        warmup = max(1, int(total_steps * self.warmup_share))

        def factor(step: int) -> float:
            if step < warmup:
                share = step / warmup
                return self.start_factor * (1 - share) + share
            share = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return (1 - share) + self.end_factor * share

        return factor

    def optimizer(
        self, model: nn.Module, settings: TrainSettings, device: torch.device
    ) -> torch.optim.Optimizer:
        kilostep = 1024 * (1 + 1 / (1 - self.momentum))
        # airbench sums the loss over the batch; optiloss averages it, so the step is batch_size larger
        lr = settings.learning_rate / kilostep * settings.batch_size
        decay = settings.weight_decay * settings.batch_size / kilostep
        biases = model.batchnorm_biases() if isinstance(model, AirbenchNet) else []
        bias_ids = {id(parameter) for parameter in biases}
        others = [p for p in model.parameters() if id(p) not in bias_ids and p.requires_grad]
        bias_lr = lr * self.bias_scaler
        groups = [
            {"params": biases, "lr": bias_lr, "weight_decay": decay / bias_lr},
            {"params": others, "lr": lr, "weight_decay": decay / lr},
        ]
        # fused SGD: one kernel for every parameter's step where CUDA offers it
        fused = device.type == "cuda"
        return torch.optim.SGD(
            [group for group in groups if group["params"]],
            momentum=self.momentum,
            nesterov=True,
            fused=fused or None,
        )

    def start(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, total_steps: int
    ) -> RunHooks:
        """Whitening from a seeded class-mixed subset of the training images, then the lookahead average."""
        if isinstance(model, AirbenchNet):
            subset = class_mixed_subset(labels, WHITENING_IMAGES).to(images.device)
            model.initialise_from_data(to_float(images[subset]))
        return _AirbenchRun(self, model, total_steps)


class _AirbenchRun(RunHooks):
    """One run's lookahead average and the whitening bias's training window."""

    def __init__(self, recipe: AirbenchRecipe, model: nn.Module, total_steps: int) -> None:
        self.recipe, self.model, self.total_steps = recipe, model, total_steps
        self.lookahead = Lookahead(model)

    def start_epoch(self, epoch: int) -> None:
        if isinstance(self.model, AirbenchNet):
            self.model.whitening_bias_trains = epoch < self.recipe.whiten_bias_epochs

    def after_step(self, step: int) -> None:
        """airbench's two updates: every ``lookahead_every`` steps, and at the last step (both when the
        step count divides by the period), so the run ends as the average."""
        recipe = self.recipe
        if step % recipe.lookahead_every == 0:
            self.lookahead.update(self.model, decay=recipe.lookahead_decay * (step / self.total_steps) ** 3)
        if step == self.total_steps:
            self.lookahead.update(self.model, decay=1.0)

    def state_dict(self) -> dict[str, Any]:
        return {"lookahead": self.lookahead.average}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("lookahead") is not None:
            self.lookahead.load(state["lookahead"])


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


SURROGATE = Surrogate(
    name="airbench",
    build=lambda num_classes, in_channels, width: AirbenchNet(num_classes, in_channels, width),
    recipe=AirbenchRecipe(),
    # airbench94's own: batch 1024, decoupled learning rate and weight decay per 1,024 examples
    defaults={"batch_size": 1024, "learning_rate": 11.5, "weight_decay": 0.0153, "model_width": 64},
    description="airbench94's network and SGD recipe (arXiv 2404.00498); images of at least 16 px",
    minimum_image_size=MINIMUM_IMAGE_SIZE,
    flip_tta=True,
)
