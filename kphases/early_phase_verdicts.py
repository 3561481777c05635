"""Verdicts of the early-phase figure: one start against another over seeds, and what that says about Frankle et al.

Frankle, Schwab & Morcos (ICLR 2020) perturb the weights of a sparse network rewound to iteration
k and report that it then loses accuracy. That reading rests on a premise: rewinding to k is what
makes the sparse network train well, so at the scale run rewinding to k must beat rewinding to 0.
Every comparison here is paired by seed (each seed has its own dense run, mask and data order, and
both trainings of a pair share them), and the verdict on a perturbation is conditional:

1. the premise first: rewinding to k against rewinding to 0 (`premise_verdict`);
2. where it holds, each perturbation against the unperturbed rewind (`paper_verdict`): "lower"
   needs a one-sided test, "costs nothing" an equivalence test (TOST: two one-sided tests against
   the margin); a difference that is neither is "undecided", never "no difference";
3. where it does not hold, or is not decided, the perturbation rows say "not tested".

The tests are Student t tests over the seeds' paired differences (`scipy.stats.ttest_1samp`),
each one-sided at `LEVEL`; the interval printed beside them is the matching two-sided
(1 - 2 LEVEL) = 90% interval, so "lower" is "interval below 0" and "equivalent" is "interval
inside +-margin". They assume normal seed-to-seed differences, which 3-6 seeds cannot check, so
every row also carries the exact sign-flip permutation p (`paired_sign_flip_test`), which assumes
nothing but cannot fall below 2 / 2^n with n seeds (0.25 at 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats

LEVEL = 0.05
"""Level of each one-sided test; the matching two-sided interval is 1 - 2 LEVEL (90%)."""
EQUIVALENCE_MARGIN = 0.01
"""Test accuracy within which two starts count as equivalent ("costs nothing"). One point: on
another CPU the same code and seeds moved the figure's means by up to about 0.01 (CHANGELOG), so a
smaller difference is not one this suite reproduces from machine to machine; it is fixed here, not
fitted to any result."""
MIN_SEEDS = 3
"""Fewest seeds a verdict rests on: a t interval needs two, and with two its one degree of freedom
stretches the 90% interval to +-6.3 standard errors of a spread estimated from two values."""
SAME_DIFFERENCE = 1e-9  # differences this close are one value: float rounding of equal accuracies (multiples of 1 / images)
MAX_PAIRED_SEEDS = 20  # the exact sign-flip test enumerates 2^n sign patterns

TOO_FEW = "too few seeds"
OUTCOMES = ("lower", "higher", "equivalent", "undecided", TOO_FEW)


@dataclass(frozen=True)
class PairedComparison:
    """An exact paired sign-flip permutation test of `treated - control` over seeds."""

    seeds: int
    """Number of seeds (pairs): each seed has its own dense run, mask, and both trainings."""
    mean_difference: float
    smallest_difference: float
    largest_difference: float
    p_value: float
    """Two-sided: the fraction of the 2^seeds sign patterns whose |mean difference| is at least the observed one."""
    p_lower: float
    """One-sided, for "treated is lower" (Frankle et al.'s claim for a perturbation): patterns with a mean at most the observed one."""
    smallest_p_value: float
    """The smallest two-sided p-value this many seeds can give (2 / 2^seeds): the test's resolution."""


def _paired_differences(treated, control) -> np.ndarray:
    treated, control = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    if treated.ndim != 1 or treated.shape != control.shape or len(treated) == 0:
        raise ValueError(
            f"paired test needs two equally long, non-empty 1-d arrays (one value per seed), got shapes {treated.shape} and {control.shape}"
        )
    if not (np.isfinite(treated).all() and np.isfinite(control).all()):
        raise ValueError(f"paired test needs finite values, got {treated.tolist()} and {control.tolist()}")
    return treated - control


def paired_sign_flip_test(treated, control) -> PairedComparison:
    """Exact paired permutation test over seeds: under "no effect" each seed's difference is as likely
    to have the other sign, so all 2^n sign patterns are equally likely (n: seeds, at most 20).

    `treated[i]` and `control[i]` must come from the same seed. With n seeds no two-sided p-value is
    below 2 / 2^n (0.25 for 3 seeds, 0.0625 for 5, 0.031 for 6): few seeds cannot reject anything.
    """
    differences = _paired_differences(treated, control)
    count = len(differences)
    if count > MAX_PAIRED_SEEDS:
        raise ValueError(f"paired test enumerates 2^n sign patterns: at most {MAX_PAIRED_SEEDS} seeds, got {count}")
    patterns = 1.0 - 2.0 * ((np.arange(2**count)[:, None] >> np.arange(count)) & 1)  # every +-1 vector
    means = patterns @ differences / count
    observed = differences.mean()
    tolerance = 1e-12 * max(1.0, float(np.abs(differences).max()))  # float rounding of equal sums
    return PairedComparison(
        seeds=count,
        mean_difference=float(observed),
        smallest_difference=float(differences.min()),
        largest_difference=float(differences.max()),
        p_value=float(np.mean(np.abs(means) >= abs(observed) - tolerance)),
        p_lower=float(np.mean(means <= observed + tolerance)),
        smallest_p_value=min(1.0, 2.0 / 2**count),
    )


@dataclass(frozen=True)
class SeedComparison:
    """`treated - control` over seeds, paired by seed: t tests for a difference and for equivalence."""

    seeds: int
    mean_difference: float
    smallest_difference: float
    largest_difference: float
    interval_low: float
    """Two-sided (1 - 2 LEVEL) Student t interval of the mean difference (NaN below 2 seeds)."""
    interval_high: float
    p_lower: float
    """One-sided t test of "treated is lower"."""
    p_higher: float
    """One-sided t test of "treated is higher"."""
    p_equivalent: float
    """TOST: the larger p of "the difference is above -margin" and "below +margin"."""
    margin: float
    sign_flip_p: float
    """Exact two-sided sign-flip permutation p (`paired_sign_flip_test`), which assumes no normality."""

    @property
    def outcome(self) -> str:
        """One of `OUTCOMES`: equivalence is read first, as a difference inside the margin does not matter by its definition."""
        if self.seeds < MIN_SEEDS:
            return TOO_FEW
        if self.p_equivalent <= LEVEL:
            return "equivalent"
        if self.p_lower <= LEVEL:
            return "lower"
        if self.p_higher <= LEVEL:
            return "higher"
        return "undecided"

    def describe(self) -> str:
        """The outcome with what it rests on, the margin beside it."""
        outcome = self.outcome
        interval = f"{1 - 2 * LEVEL:.0%} interval"
        if outcome == TOO_FEW:
            return f"too few seeds ({self.seeds}; a verdict needs {MIN_SEEDS})"
        if outcome == "equivalent":
            return f"equivalent: {interval} inside +-{self.margin:.3f}"
        if outcome in ("lower", "higher"):
            side = "below" if outcome == "lower" else "above"
            return f"{outcome}: {interval} {side} 0 and not inside +-{self.margin:.3f}"
        return f"undecided: {interval} neither excludes 0 nor lies inside +-{self.margin:.3f}"


def _t_tests(differences: np.ndarray, margin: float) -> tuple[float, float, float, float, float]:
    """(interval low, high, p lower, p higher, p equivalent) of the mean of `differences`."""
    count, mean = len(differences), float(differences.mean())
    if count < 2:
        return np.nan, np.nan, np.nan, np.nan, np.nan
    if np.ptp(differences) <= SAME_DIFFERENCE:
        # No spread: t is infinite (or 0/0), scipy returns NaN or warns of cancellation; the mean is known exactly.
        return mean, mean, float(mean >= 0), float(mean <= 0), float(abs(mean) >= margin)

    def p(null: float, alternative: str) -> float:
        return float(scipy.stats.ttest_1samp(differences, null, alternative=alternative).pvalue)

    interval = scipy.stats.ttest_1samp(differences, 0.0).confidence_interval(1 - 2 * LEVEL)
    equivalent = max(p(-margin, "greater"), p(margin, "less"))
    return float(interval.low), float(interval.high), p(0.0, "less"), p(0.0, "greater"), equivalent


def compare_seeds(treated, control, margin: float = EQUIVALENCE_MARGIN) -> SeedComparison:
    """t tests of `treated - control` (same seed at the same index): lower, higher, equivalent within `margin`."""
    if not (np.isfinite(margin) and margin > 0):
        raise ValueError(f"equivalence margin must be a positive number, got {margin!r}")
    differences = _paired_differences(treated, control)
    exact = paired_sign_flip_test(treated, control)
    low, high, p_lower, p_higher, p_equivalent = _t_tests(differences, margin)
    return SeedComparison(
        seeds=exact.seeds,
        mean_difference=exact.mean_difference,
        smallest_difference=exact.smallest_difference,
        largest_difference=exact.largest_difference,
        interval_low=low,
        interval_high=high,
        p_lower=p_lower,
        p_higher=p_higher,
        p_equivalent=p_equivalent,
        margin=margin,
        sign_flip_p=exact.p_value,
    )


def premise_holds(premise: SeedComparison) -> bool:
    """Rewinding to k beats rewinding to 0 (`premise`: rewind k minus rewind 0) by more than the margin."""
    return premise.outcome == "higher"


def premise_verdict(premise: SeedComparison) -> str:
    """The premise row: does rewinding to k beat rewinding to 0 at this scale?"""
    if premise.outcome == TOO_FEW:
        return f"premise not tested: too few seeds ({premise.seeds}; needs {MIN_SEEDS})"
    if premise_holds(premise):
        return "the premise holds: rewinding to k beats rewinding to 0, as the paper needs"
    return f"the premise does not hold at this scale: rewinding to k is not above rewinding to 0 ({premise.outcome})"


def paper_verdict(premise: SeedComparison | None, comparison: SeedComparison, paper: str) -> str:
    """What `comparison` says about Frankle et al.'s finding `paper` ("lower" or "higher" than the
    control; "" where the suite does not state it), read only where the premise holds (`premise`:
    rewind k minus rewind 0; None where there is no k > 0 to rewind to)."""
    if paper not in ("lower", "higher", ""):
        raise ValueError(f"paper direction must be 'lower', 'higher' or '', got {paper!r}")
    if not paper:
        return "(the paper's finding is not checked here)"
    if premise is None:
        return "not tested: no rewind point k > 0 to test the premise on"
    if premise.outcome == TOO_FEW:
        return f"not tested: too few seeds ({premise.seeds}) to test the premise"
    if not premise_holds(premise):
        return "not tested: the premise does not hold at this scale"
    outcome = comparison.outcome
    if outcome == TOO_FEW:
        return f"not tested: too few seeds ({comparison.seeds})"
    if outcome == paper:
        return "as the paper"
    if outcome == "undecided":
        return f"undecided (the paper: {paper})"
    if outcome == "equivalent":
        return f"against the paper: equivalent within +-{comparison.margin:.3f}, the paper finds it {paper}"
    return f"against the paper: {outcome}, the paper finds it {paper}"


__all__ = [
    "EQUIVALENCE_MARGIN",
    "LEVEL",
    "MIN_SEEDS",
    "PairedComparison",
    "SeedComparison",
    "compare_seeds",
    "paired_sign_flip_test",
    "paper_verdict",
    "premise_holds",
    "premise_verdict",
]
