"""Hardening, second round (issue 19): class-activation maps under refused targets, threads and non-finite input.

A refused call leaves no hook on the model and the next valid call gives the same map as before it; two threads
calling ``cam`` on one backbone each get their own map; one NaN or infinite pixel anywhere is refused.
"""

from __future__ import annotations

import threading

import pytest
import torch

import explorer


@pytest.fixture(scope="module")
def bb() -> explorer.Backbone:
    torch.manual_seed(0)
    return explorer.load_backbone("resnet10t", pretrained=False, device="cpu")


def _hooks(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


REFUSED_TARGETS = ["not a class name", 10**6, -(10**6), "²", 2.5, [0, 1, 2], "layer1:3"]


@pytest.mark.parametrize("target", REFUSED_TARGETS, ids=repr)
def test_a_refused_target_leaves_no_hook_and_later_calls_are_unchanged(bb, target):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    hooks = _hooks(bb.model)
    before = explorer.cam(bb, x, stage="layer2", target=7)[0].map
    assert before.amax() > 0  # a map a leftover hook would change
    for _ in range(3):  # the hooks would pile up
        with pytest.raises(explorer.ExplorerError):
            explorer.cam(bb, x, stage="layer2", target=target)
        assert _hooks(bb.model) == hooks
    after = explorer.cam(bb, x, stage="layer2", target=7)[0]
    assert torch.equal(after.map, before) and after.target == 7
    assert _hooks(bb.model) == hooks


@pytest.mark.parametrize("method", ["gradcam", "eigencam", "scorecam"])
def test_two_threads_on_one_backbone_each_get_their_own_map(bb, method):
    generator = torch.Generator().manual_seed(2)
    inputs = [torch.rand(1, 3, 64, 64, generator=generator) for _ in range(2)]
    targets = [7, None]
    hooks = _hooks(bb.model)
    expected = [
        explorer.cam(bb, x, stage="layer2", target=t, method=method)[0] for x, t in zip(inputs, targets)
    ]
    assert not torch.equal(expected[0].map, expected[1].map)  # the check below can tell them apart
    wrong, errors = [], []
    rounds = 6 if method == "scorecam" else 20

    def work(index: int) -> None:
        for _ in range(rounds):
            try:
                found = explorer.cam(bb, inputs[index], stage="layer2", target=targets[index], method=method)[
                    0
                ]
            except Exception as err:  # noqa: BLE001 - recorded and asserted below
                errors.append(repr(err))
                continue
            if not torch.equal(found.map, expected[index].map) or found.target != expected[index].target:
                wrong.append(index)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and wrong == []
    assert _hooks(bb.model) == hooks


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", [(0, 0, 0, 0), (0, 2, 63, 63), (1, 1, 31, 7)], ids=str)
def test_one_non_finite_pixel_anywhere_is_refused(bb, value, where):
    x = torch.rand(2, 3, 64, 64)
    x[where] = value
    hooks = _hooks(bb.model)
    with pytest.raises(explorer.ExplorerError, match="NaN or infinite"):
        explorer.cam(bb, x, stage="layer2")
    image = x[where[0]].permute(1, 2, 0).numpy()  # the same pixel in an (H, W, 3) float image
    with pytest.raises(explorer.ExplorerError, match="(?i)nan|finite"):
        explorer.cam(bb, image, stage="layer2")
    assert _hooks(bb.model) == hooks
