"""KerasAdam: Keras's update rule, a real torch optimizer, argument checks."""

import copy
import math

import pytest
import torch

from volreg.optim import KerasAdam


def quadratic_grads(params, step):
    for index, param in enumerate(params):
        param.grad = torch.sin(param.detach() * (index + 1) + step)


def run_steps(optimizer, params, steps, start=0):
    for step in range(start, start + steps):
        quadratic_grads(params, step)
        optimizer.step()


def make_params(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(5, 3, generator=generator, requires_grad=True),
        torch.randn(7, generator=generator, requires_grad=True),
    ]


def test_first_step_follows_keras_formula():
    param = torch.tensor([0.5, -2.0, 1e-9], requires_grad=True)
    grad = torch.tensor([0.1, -3.0, 1e-8])
    optimizer = KerasAdam([param], lr=1e-2, eps=1e-7)
    param.grad = grad.clone()

    optimizer.step()

    beta1, beta2 = 0.9, 0.999
    m = (1 - beta1) * grad
    v = (1 - beta2) * grad**2
    alpha = 1e-2 * math.sqrt(1 - beta2) / (1 - beta1)
    expected = torch.tensor([0.5, -2.0, 1e-9]) - alpha * m / (v.sqrt() + 1e-7)
    torch.testing.assert_close(param.detach(), expected)


def test_equals_torch_adam_with_rescaled_eps():
    # Keras's eps_hat equals torch's eps = eps_hat / sqrt(1 - beta2^t) at step t.
    keras_params, torch_params = make_params(), make_params()
    keras_optimizer = KerasAdam(keras_params, eps=1e-3)
    torch_optimizer = torch.optim.Adam(torch_params, eps=1e-3)

    for step in range(1, 6):
        quadratic_grads(keras_params, step)
        quadratic_grads(torch_params, step)
        torch_optimizer.param_groups[0]["eps"] = 1e-3 / math.sqrt(1 - 0.999**step)
        keras_optimizer.step()
        torch_optimizer.step()

    for keras_param, torch_param in zip(keras_params, torch_params, strict=True):
        torch.testing.assert_close(keras_param, torch_param, atol=1e-6, rtol=1e-6)


def test_differs_from_torch_adam_with_same_eps():
    keras_params, torch_params = make_params(), make_params()
    keras_optimizer = KerasAdam(keras_params, eps=1e-3)
    torch_optimizer = torch.optim.Adam(torch_params, eps=1e-3)

    run_steps(keras_optimizer, keras_params, 5)
    run_steps(torch_optimizer, torch_params, 5)

    assert not torch.allclose(keras_params[0], torch_params[0], atol=1e-6, rtol=1e-6)


def test_keras_defaults():
    optimizer = KerasAdam(make_params())

    group = optimizer.param_groups[0]
    assert group["lr"] == 1e-3
    assert group["betas"] == (0.9, 0.999)
    assert group["eps"] == 1e-7


def test_state_dict_round_trip_resumes_exactly():
    params = make_params()
    optimizer = KerasAdam(params)
    run_steps(optimizer, params, 3)

    resumed_params = [p.detach().clone().requires_grad_() for p in params]
    resumed = KerasAdam(resumed_params)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    run_steps(optimizer, params, 4, start=3)
    run_steps(resumed, resumed_params, 4, start=3)

    for param, resumed_param in zip(params, resumed_params, strict=True):
        torch.testing.assert_close(param, resumed_param, atol=0, rtol=0)
    assert resumed.state[resumed_params[0]]["step"].item() == 7


def test_lr_scheduler_changes_step_size():
    params = make_params()
    optimizer = KerasAdam(params, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.0)
    run_steps(optimizer, params, 1)
    scheduler.step()
    before = [p.detach().clone() for p in params]

    run_steps(optimizer, params, 1, start=1)

    assert optimizer.param_groups[0]["lr"] == 0.0
    for param, previous in zip(params, before, strict=True):
        torch.testing.assert_close(param.detach(), previous, atol=0, rtol=0)


def test_weight_decay_is_decoupled():
    param = torch.tensor([2.0], requires_grad=True)
    optimizer = KerasAdam([param], lr=0.1, weight_decay=0.5)
    param.grad = torch.tensor([0.0])

    optimizer.step()

    # Zero gradient: only Keras's decay theta -= theta * wd * lr acts.
    torch.testing.assert_close(param.detach(), torch.tensor([2.0 * (1 - 0.1 * 0.5)]))


def test_amsgrad_keeps_max_second_moment():
    param = torch.tensor([1.0], requires_grad=True)
    optimizer = KerasAdam([param], amsgrad=True)
    for grad in (10.0, 0.0):
        param.grad = torch.tensor([grad])
        optimizer.step()

    state = optimizer.state[param]
    assert state["max_exp_avg_sq"].item() >= state["exp_avg_sq"].item()
    assert state["max_exp_avg_sq"].item() == pytest.approx((1 - 0.999) * 100.0)


def test_skips_params_without_grad():
    params = make_params()
    optimizer = KerasAdam(params)
    params[0].grad = torch.ones_like(params[0])

    optimizer.step()

    assert params[1] not in optimizer.state


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "invalid lr=-1.0"),
        ({"betas": (0.9, 1.0)}, "invalid betas"),
        ({"betas": (0.9,)}, "invalid betas"),
        ({"eps": -1e-7}, "invalid eps"),
        ({"weight_decay": -0.1}, "invalid weight_decay"),
        ({"foreach": True, "fused": True}, "the two update paths exclude each other"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KerasAdam(make_params(), **kwargs)


@pytest.mark.parametrize("options", [{}, {"amsgrad": True}, {"weight_decay": 0.1}])
def test_foreach_equals_per_tensor_loop(options):
    loop_params, foreach_params = make_params(), make_params()
    loop = KerasAdam(loop_params, lr=1e-2, **options)
    foreach = KerasAdam(foreach_params, lr=1e-2, foreach=True, **options)

    run_steps(loop, loop_params, 5)
    run_steps(foreach, foreach_params, 5)

    for loop_param, foreach_param in zip(loop_params, foreach_params, strict=True):
        torch.testing.assert_close(foreach_param, loop_param, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("options", [{}, {"amsgrad": True}, {"weight_decay": 0.1}])
def test_fused_equals_per_tensor_loop(options):
    loop_params, fused_params = make_params(), make_params()
    loop = KerasAdam(loop_params, lr=1e-2, eps=1e-3, **options)
    fused = KerasAdam(fused_params, lr=1e-2, eps=1e-3, fused=True, **options)

    run_steps(loop, loop_params, 20)
    run_steps(fused, fused_params, 20)

    for loop_param, fused_param in zip(loop_params, fused_params, strict=True):
        torch.testing.assert_close(fused_param, loop_param, atol=1e-6, rtol=1e-5)
    assert fused.state[fused_params[0]]["step"].item() == 20


def test_fused_keeps_keras_eps_placement():
    # A large eps separates the placements: torch Adam with the same eps takes other steps.
    keras_params, torch_params = make_params(), make_params()
    fused = KerasAdam(keras_params, eps=1e-1, fused=True)
    loop_params = make_params()
    loop = KerasAdam(loop_params, eps=1e-1)
    plain = torch.optim.Adam(torch_params, eps=1e-1)

    for optimizer, params in ((fused, keras_params), (loop, loop_params), (plain, torch_params)):
        run_steps(optimizer, params, 3)

    torch.testing.assert_close(keras_params[0], loop_params[0])
    assert not torch.allclose(keras_params[0], torch_params[0], atol=1e-5)


def test_foreach_handles_uneven_step_counts():
    params = make_params()
    optimizer = KerasAdam(params, foreach=True)
    params[0].grad = torch.ones_like(params[0])
    optimizer.step()

    run_steps(optimizer, params, 2)

    assert optimizer.state[params[0]]["step"].item() == 3
    assert optimizer.state[params[1]]["step"].item() == 2
