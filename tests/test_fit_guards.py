"""`tasks.common.trainer.fit` never saves non-finite weights and stops a run that only produces NaN."""
import numpy as np
import paddle
import pytest

import elmo_paddle  # noqa: F401
from elmo_paddle.errors import UserError
from tasks.common.trainer import FitConfig, TaskHooks, fit


def _setup(lr, loss_value=None):
    paddle.seed(0)
    model = paddle.nn.Linear(2, 1)
    opt = paddle.optimizer.SGD(learning_rate=lr, parameters=model.parameters())
    x = paddle.to_tensor(np.ones((4, 2), dtype="float32"))
    saved = []

    def loss(m, batch):
        out = (m(x) ** 2).mean()
        return out * float("nan") if loss_value == "nan" else out

    hooks = TaskHooks(train_batches=lambda epoch: range(5), loss=loss, evaluate=lambda m: {"f1": 50.0},
                      save_best=lambda m, scores: saved.append([p.numpy().copy() for p in m.parameters()]))
    return model, opt, hooks, saved


def test_nan_learning_rate_never_saves_a_nan_model(tmp_path):
    model, opt, hooks, saved = _setup(float("nan"))
    with pytest.raises(UserError, match="non-finite"):
        fit(model, opt, hooks, FitConfig(run_dir=tmp_path, eval_every=1, epochs=1))
    assert all(np.isfinite(w).all() for ws in saved for w in ws)
    assert not saved  # the first evaluation came after the first (poisoning) step


def test_only_nan_losses_stop_after_max_bad_steps(tmp_path):
    model, opt, hooks, saved = _setup(0.1, loss_value="nan")
    before = [p.numpy().copy() for p in model.parameters()]
    with pytest.raises(UserError, match="3 consecutive non-finite losses"):
        fit(model, opt, hooks, FitConfig(run_dir=tmp_path, epochs=1, max_bad_steps=3))
    for a, b in zip(before, model.parameters()):
        np.testing.assert_array_equal(a, b.numpy())  # skipped steps changed nothing


def test_a_few_nan_losses_are_skipped_and_training_goes_on(tmp_path):
    model, opt, hooks, saved = _setup(0.1)
    calls = []
    real = hooks.loss

    def sometimes_nan(m, batch):
        calls.append(batch)
        out = real(m, batch)
        return out * float("nan") if batch == 1 else out

    hooks.loss = sometimes_nan
    result = fit(model, opt, hooks, FitConfig(run_dir=tmp_path, epochs=1, max_bad_steps=2))
    assert result.steps == 4 and len(saved) == 1
