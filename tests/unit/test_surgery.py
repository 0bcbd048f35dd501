"""The frozen-parameters context: flags and training mode restored, also after an exception."""

from __future__ import annotations

import pytest
from torch import nn

from gradlens.models.surgery import frozen


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Linear(3, 2))
    model[0].bias.requires_grad_(False)  # one flag off beforehand: restored as it was
    return model.train()


def _flags(model: nn.Module) -> list[bool]:
    return [p.requires_grad for p in model.parameters()]


def test_frozen_keeps_only_keep_and_restores_flags_and_mode() -> None:
    model = _model()
    before = _flags(model)
    keep = model[2].weight
    with frozen(model, keep=[keep]):
        assert not model.training and not model[1].training
        assert [p is keep for p in model.parameters()] == _flags(model)
    assert _flags(model) == before
    assert model.training and model[1].training


def test_frozen_without_eval_mode_leaves_the_mode_alone() -> None:
    model = _model()
    model[1].eval()  # mixed modes: untouched
    with frozen(model, eval_mode=False):
        assert not any(_flags(model))
        assert model.training and not model[1].training
    assert model.training and not model[1].training
    assert _flags(model) == [True, False, True, True]


def test_frozen_restores_after_an_exception() -> None:
    model = _model()
    before = _flags(model)
    with pytest.raises(RuntimeError), frozen(model, keep=[model[0].weight]):
        raise RuntimeError("inside")
    assert _flags(model) == before and model.training
