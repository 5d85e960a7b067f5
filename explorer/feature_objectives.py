"""What feature visualisation maximises, and where it is read: a channel, a direction in a stage's channel space
(a concept) or a class logit, at a stage or at any layer from :func:`~explorer.list_layers`; one per image of a
batch. The model's forward pass ends at the objective's module (a hook raises): later layers never run.

Example::

    >>> objective, batched = make_objective(bb, "blocks.1", [3, 5], None, None, size=64)
    >>> objective.labels, batched
    (['channel 3', 'channel 5'], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ._args import shown, whole
from .errors import FeatureVisError, InvalidArgumentError, LayerNotFoundError
from .hooks import LayerLayout, resolve_layers, to_nchw

__all__ = ["ChannelT", "Objective", "make_objective", "objective_module", "score"]

ChannelT = int | Sequence[int]
"""One channel index, or a list of them (optimised in one batch)."""

# ----------------------------------------------------------------------------------------------- objectives


class _Stop(Exception):
    """Ends the forward pass once the objective's module has run."""


@dataclass
class Objective:
    """Where the objective is read and how: per batch element, a channel, a direction or a class."""

    stage: str  # stage or layer name, "head" for logits
    module: str | None  # module path to hook; None reads the model's output (logits)
    layout: LayerLayout
    labels: list[str]
    channels: torch.Tensor | None = None  # (B,) channel indices
    directions: torch.Tensor | None = None  # (B, C)
    classes: torch.Tensor | None = None  # (B,)

    def part(self, rows: slice) -> Objective:
        """The objective of the batch elements ``rows`` (a chunk of the batch)."""

        def cut(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor[rows]

        return replace(
            self,
            labels=self.labels[rows],
            channels=cut(self.channels),
            directions=cut(self.directions),
            classes=cut(self.classes),
        )

    def score(self, output: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
        """``(B,)`` objective values from the hooked module's output (or the logits)."""
        if self.classes is not None:
            logits = _logits(output)
            return logits.gather(1, self.classes[:, None].to(logits.device))[:, 0]
        fmap = to_nchw(output, input_hw, self.layout).float()
        if self.channels is not None:
            index = self.channels.to(fmap.device)
            picked = fmap[torch.arange(fmap.shape[0], device=fmap.device), index]
            return picked.flatten(1).mean(1)
        directions = self.directions.to(fmap.device, fmap.dtype)
        return torch.einsum("bchw,bc->bhw", fmap, directions).flatten(1).mean(1)


def _logits(output: object) -> torch.Tensor:
    logits = getattr(output, "logits", output)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return logits


def _stage_module(bb, stage: str | None) -> tuple[str, str, LayerLayout]:
    """``(name, module path, layout)`` of a stage name or any :func:`list_layers` name."""
    stage = bb.stage_names[-1] if stage is None else stage
    if not isinstance(stage, str):
        raise InvalidArgumentError(
            f"stage={shown(stage)}; pass a stage name ({', '.join(bb.stage_names)}) or a layer name from "
            "explorer.list_layers(bb)."
        )
    if stage in bb.stage_names and bb.stage(stage).module:
        return stage, bb.stage(stage).module, bb.layout(stage)
    try:
        resolve_layers(bb.model, [stage])
    except LayerNotFoundError as err:
        raise LayerNotFoundError(f"{err} Stages: {', '.join(bb.stage_names)}.") from None
    return stage, stage, bb.layout(stage)


def _channels_of(bb, name: str, size: int) -> int:
    """The channels of the module's output: a stage's, as its loader probed them; any other layer's from one
    forward pass on zeros (any layout)."""
    known = bb.stage(name).channels if name in bb.stage_names else None
    if known:
        return int(known)
    zeros = torch.zeros(1, 3, size, size, device=bb.device, dtype=bb.dtype)
    fmap = bb.capture(zeros, layers=[name])[name]
    return int(fmap.shape[1])


def _as_list(value, name: str) -> tuple[list, bool]:
    """``(items, batched)``: a single value becomes one item; a list or tuple is a batch."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise InvalidArgumentError(f"{name}=[] is empty; pass at least one.")
        return list(value), True
    return [value], False


def make_objective(bb, stage, channel, direction, target, size) -> tuple[Objective, bool]:
    given = [
        n for n, v in (("channel", channel), ("direction", direction), ("target", target)) if v is not None
    ]
    if len(given) != 1:
        raise InvalidArgumentError(
            f"Pass exactly one objective: channel= (a channel index or a list), direction= (a (C,) vector or a "
            f"(K, C) array) or target= (a class of the head); got {', '.join(given) or 'none'}."
        )
    if target is not None:
        return _class_objective(bb, stage, target)
    name, module, layout = _stage_module(bb, stage)
    channels = _channels_of(bb, name, size)
    if channel is not None:
        items, batched = _as_list(channel, "channel")
        for item in items:
            whole("channel", item, maximum=channels - 1, hint=f" {name} has {channels} channels.")
        labels = [f"channel {int(c)}" for c in items]
        return Objective(
            name, module, layout, labels, channels=torch.tensor([int(c) for c in items])
        ), batched
    try:
        vectors = torch.as_tensor(np.asarray(direction, dtype=np.float32))
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"direction={shown(direction)} ({type(direction).__name__}); pass a ({channels},) vector or a "
            f"(K, {channels}) array of directions in {name}'s channel space (a concepts basis row)."
        ) from None
    batched = vectors.ndim == 2
    if vectors.ndim not in (1, 2) or vectors.shape[-1] != channels or vectors.numel() == 0:
        raise InvalidArgumentError(
            f"direction has shape {tuple(vectors.shape)}; {name} has {channels} channels, so pass a ({channels},) "
            f"vector or a (K, {channels}) array."
        )
    if not torch.isfinite(vectors).all() or bool((vectors.abs().amax(-1) == 0).any()):
        raise InvalidArgumentError(
            "direction holds NaN, inf or an all-zero vector; pass finite, non-zero ones."
        )
    vectors = vectors.reshape(-1, channels)
    labels = [f"direction {i}" for i in range(len(vectors))]
    return Objective(name, module, layout, labels, directions=vectors), batched


def _class_objective(bb, stage, target) -> tuple[Objective, bool]:
    from .cam_targets import class_index

    names = bb.class_names
    num_classes = len(names)
    if not num_classes:
        raise FeatureVisError(
            f"{bb.spec} has no classifier head, so target= names no class. Visualise a channel (channel=) or a "
            "direction (direction=) of a stage instead."
        )
    if stage is not None:
        raise InvalidArgumentError(
            f"stage={stage!r} with target=: a class logit is read from the head. Drop stage=, or pass channel=."
        )
    items, batched = _as_list(target, "target")
    indices = []
    for item in items:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            indices.append(
                whole("target", item, maximum=num_classes - 1, hint=" (a class index of the head)")
            )
        elif isinstance(item, str):
            indices.append(class_index(item, names))
        else:
            raise InvalidArgumentError(
                f"target={shown(item)} ({type(item).__name__}); pass a class index or a class name."
            )
    labels = [f"class {i} ({names[i]})" for i in indices]
    return Objective("head", None, LayerLayout(), labels, classes=torch.tensor(indices)), batched


# ----------------------------------------------------------------------------------------------- the forward pass


def objective_module(bb, objective: Objective) -> torch.nn.Module | None:
    """The module whose output ``objective`` reads (None: the model's output), resolved once for many passes."""
    return (
        None if objective.module is None else resolve_layers(bb.model, [objective.module])[objective.module]
    )


def score(bb, objective: Objective, module: torch.nn.Module | None, pixels: torch.Tensor) -> torch.Tensor:
    """Run the model on normalised ``pixels`` and return the ``(B,)`` objective; the pass stops at ``module``
    (:func:`objective_module`'s answer, resolved once by a loop that scores many times)."""
    if module is None:
        return objective.score(bb.model(pixels), tuple(pixels.shape[-2:]))
    found: list[torch.Tensor] = []

    def hook(_module, _args, output):
        found.append(objective.score(output, tuple(pixels.shape[-2:])))
        raise _Stop

    handles = []
    try:
        handles.append(module.register_forward_hook(hook))
        bb.model(pixels)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if not found:
        raise FeatureVisError(
            f"The forward pass never ran {objective.stage} as a module. Pick a stage, or a layer from "
            "explorer.list_layers(bb) that the model calls."
        )
    return found[0]
