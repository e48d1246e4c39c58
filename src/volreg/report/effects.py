"""The effect of each setting: what moving it alone toward Keras (fix) or toward the port (break)
did to the best val L1, ranked, with a sentence per setting."""

from dataclasses import dataclass

from volreg.report.variants import REFERENCE_MODEL, Variant

# The 97.5% quantiles of Student's t for 1 to 10 degrees of freedom: a shift within
# T_975[dof] standard errors of zero is inside its two-sided 95% interval, so it is called noise.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
T_975_LARGE = 2.0
# Shifts that round to zero at the four decimals the report prints.
NO_CHANGE = 5e-5


def t_quantile(dof: int) -> float:
    return T_975[dof - 1] if dof <= len(T_975) else T_975_LARGE


@dataclass
class Shift:
    """The change of mean best val L1 against the baseline, its standard error and the error's
    degrees of freedom."""

    delta: float
    error: float | None
    dof: int | None

    def is_noise(self) -> bool:
        """True when zero is inside the 95% t-interval (unknown error: not noise)."""
        if self.error is None or not self.dof:
            return False
        return abs(self.delta) < t_quantile(self.dof) * self.error


@dataclass
class SettingEffect:
    setting: str
    fix: Shift | None = None
    break_: Shift | None = None

    def score(self) -> float:
        """Return the mean of the gap that fixing closes and the gap that breaking opens."""
        parts = []
        if self.fix is not None:
            parts.append(-self.fix.delta)
        if self.break_ is not None:
            parts.append(self.break_.delta)
        return sum(parts) / len(parts) if parts else 0.0


def setting_effects(variants: list[Variant]) -> list[SettingEffect]:
    """Collect the fix=X and break=X variants per setting X, most important first."""
    effects: dict[str, SettingEffect] = {}
    for variant in variants:
        delta = variant.delta()
        if variant.change is None or delta is None:
            continue
        group, _, setting = variant.change.partition("=")
        effect = effects.setdefault(setting, SettingEffect(setting))
        shift = Shift(delta, variant.delta_error(), variant.delta_dof())
        if group == "fix":
            effect.fix = shift
        else:
            effect.break_ = shift
    return sorted(effects.values(), key=SettingEffect.score, reverse=True)


def keras_gap(variants: list[Variant]) -> float | None:
    """Mean best val L1 of the unchanged port minus that of the unchanged Keras-faithful model."""
    for variant in variants:
        if (
            variant.change is None
            and variant.baseline is not None
            and variant.baseline.model == REFERENCE_MODEL
        ):
            return variant.delta()
    return None


def describe(effect: SettingEffect, gap: float | None) -> str:
    """Return one sentence on what fixing and breaking the setting did."""
    parts = []
    if effect.fix is not None:
        parts.append("fixing it alone " + _describe_shift(effect.fix, gap, "closes", -1.0))
    if effect.break_ is not None:
        parts.append("breaking it alone " + _describe_shift(effect.break_, gap, "opens", 1.0))
    return f"`{effect.setting}`: " + "; ".join(parts) + "."


def _describe_shift(shift: Shift, gap: float | None, verb: str, sign: float) -> str:
    if abs(shift.delta) < NO_CHANGE:
        return "leaves val L1 unchanged at 4 decimals"
    text = f"moves val L1 by {shift.delta:+.4f}"
    if shift.error is not None:
        text += f" ± {shift.error:.4f} (SE)"
    if gap is not None and gap > 0:
        text += f", which {verb} {sign * shift.delta / gap:.0%} of the gap"
    if shift.is_noise():
        text += " (its 95% interval includes zero: within seed-to-seed noise)"
    return text
