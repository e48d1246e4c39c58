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
    ``foreach`` updates all tensors of a parameter group with one multi-tensor kernel per
    operation instead of a Python loop over tensors. The result is the same.

    ``fused`` runs the whole update in one pass over each tensor with PyTorch's fused AdamW
    kernel. That kernel adds eps to the bias-corrected sqrt(v), so it is given
    ``eps / sqrt(1 - beta2^t)`` at step t, which is Keras's update written the other way
    round; results agree with the loop to float32 rounding, not bit for bit.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        foreach: bool = False,
        fused: bool = False,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"invalid lr={lr!r}: it must be non-negative")
        if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"invalid betas={betas!r}: expected two values in [0, 1)")
        if not eps >= 0.0:
            raise ValueError(f"invalid eps={eps!r}: it must be non-negative")
        if not weight_decay >= 0.0:
            raise ValueError(f"invalid weight_decay={weight_decay!r}: it must be non-negative")
        if foreach and fused:
            raise ValueError(
                "invalid foreach=True with fused=True: the two update paths exclude each "
                "other, so set one of them to false (model.optimizer.foreach=false or "
                "model.optimizer.fused=false; model=keras_faithful sets fused=true)"
            )
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if any(param.grad.is_sparse for param in params):
                raise RuntimeError("KerasAdam does not support sparse gradients")
            for param in params:
                self._init_state(param, group)

            # One multi-tensor update needs one step count; parameters that skipped steps
            # (no gradient then) have their own count and take the per-tensor path.
            steps = {self.state[param]["step"].item() for param in params}
            if group["fused"] and len(steps) == 1:
                self._update_fused(params, group)
            elif group["foreach"] and len(steps) == 1:
                self._update_foreach(params, group)
            else:
                for param in params:
                    self._update(param, group)
        return loss

    def _init_state(self, param: torch.Tensor, group: dict) -> None:
        state = self.state[param]
        if state:
            return
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    @staticmethod
    def _step_size(group: dict, step: float) -> float:
        beta1, beta2 = group["betas"]
        return group["lr"] * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)

    def _update(self, param: torch.Tensor, group: dict) -> None:
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        state = self.state[param]
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

        denominator = second_moment.sqrt().add_(group["eps"])
        param.addcdiv_(exp_avg, denominator, value=-self._step_size(group, step))

    def _update_foreach(self, params: list[torch.Tensor], group: dict) -> None:
        if not params:
            return
        beta1, beta2 = group["betas"]
        states = [self.state[param] for param in params]
        for state in states:
            state["step"] += 1
        step = states[0]["step"].item()
        grads = [param.grad for param in params]
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]

        if group["weight_decay"] != 0.0:
            torch._foreach_mul_(params, 1.0 - group["lr"] * group["weight_decay"])

        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1.0 - beta2)
        second_moments = exp_avg_sqs
        if group["amsgrad"]:
            second_moments = [state["max_exp_avg_sq"] for state in states]
            torch._foreach_maximum_(second_moments, exp_avg_sqs)

        denominators = torch._foreach_sqrt(second_moments)
        torch._foreach_add_(denominators, group["eps"])
        torch._foreach_addcdiv_(params, exp_avgs, denominators, value=-self._step_size(group, step))

    def _update_fused(self, params: list[torch.Tensor], group: dict) -> None:
        if not params:
            return
        beta1, beta2 = group["betas"]
        states = [self.state[param] for param in params]
        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1.0)
        step = steps[0].item()
        max_exp_avg_sqs = [state["max_exp_avg_sq"] for state in states] if group["amsgrad"] else []
        # AdamW's decoupled decay, theta *= 1 - lr * weight_decay, is Keras's weight_decay.
        torch._fused_adamw_(
            params,
            [param.grad for param in params],
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            max_exp_avg_sqs,
            steps,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"] / math.sqrt(1.0 - beta2**step),
            amsgrad=group["amsgrad"],
            maximize=False,
        )
