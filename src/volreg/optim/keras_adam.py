"""Adam with Keras's epsilon placement."""

import math
from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer


class KerasAdam(Optimizer):
    """Adam as Keras 3 implements it (``keras/src/optimizers/adam.py``).

    Keras folds both bias corrections into the step size and adds epsilon to the raw
    sqrt(v) ("epsilon hat" in Kingma & Ba, section 2)::

        alpha_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
        theta  -= alpha_t * m / (sqrt(v) + eps)

    ``torch.optim.Adam`` adds eps to the bias-corrected sqrt(v / (1 - beta2^t)) instead, so
    the same eps is sqrt(1 - beta2^t) times smaller there: 3.16e-6 at step 1 with beta2 0.999.
    Defaults are Keras's: lr 1e-3, betas (0.9, 0.999), eps 1e-7.

    ``weight_decay`` is Keras's decoupled decay, ``theta -= theta * weight_decay * lr``,
    applied before the Adam update. ``amsgrad`` keeps the running maximum of v as Keras does.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"invalid lr={lr!r}: it must be non-negative")
        if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"invalid betas={betas!r}: expected two values in [0, 1)")
        if not eps >= 0.0:
            raise ValueError(f"invalid eps={eps!r}: it must be non-negative")
        if not weight_decay >= 0.0:
            raise ValueError(f"invalid weight_decay={weight_decay!r}: it must be non-negative")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("KerasAdam does not support sparse gradients")
                self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict) -> None:
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(
                    param, memory_format=torch.preserve_format
                )

        state["step"] += 1
        step = state["step"].item()
        grad = param.grad

        if group["weight_decay"] != 0.0:
            param.mul_(1.0 - lr * group["weight_decay"])

        # Keras writes the moment updates as m += (g - m)(1 - beta1), which is lerp.
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1.0 - beta1)
        exp_avg_sq.lerp_(grad.square(), 1.0 - beta2)
        second_moment = exp_avg_sq
        if group["amsgrad"]:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            second_moment = state["max_exp_avg_sq"]

        alpha = lr * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
        denominator = second_moment.sqrt().add_(group["eps"])
        param.addcdiv_(exp_avg, denominator, value=-alpha)
