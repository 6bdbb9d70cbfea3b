"""Attacks: composable constraints with exact projections, objectives, and batched evasion attacks (the paper's
Algorithm 1 :class:`PGDLineSearch`, :class:`PGD`, :class:`FGSM`, :class:`MIFGSM`)."""

from transferlab.attacks.base import AttackResult, EvasionAttack, steepest_direction
from transferlab.attacks.constraints import (Ball, Binary, Box, Constraint, FeatureAdditionOnly, Intersection, L1Ball,
                                             L2Ball, LinfBall, Mask, dual_norm, lp_norm, parse_norm)
from transferlab.attacks.fgsm import FGSM
from transferlab.attacks.mifgsm import MIFGSM
from transferlab.attacks.objectives import Objective
from transferlab.attacks.pgd import PGD
from transferlab.attacks.pgd_line_search import PGDLineSearch
from transferlab.attacks.poisoning import Poisoning, PoisoningResult
from transferlab.attacks.security import SecurityCurve, security_curve

__all__ = ["AttackResult", "EvasionAttack", "steepest_direction", "Ball", "Binary", "Box", "Constraint",
           "FeatureAdditionOnly", "Intersection", "L1Ball", "L2Ball", "LinfBall", "Mask", "dual_norm", "lp_norm",
           "parse_norm", "FGSM", "MIFGSM", "Objective", "PGD", "PGDLineSearch", "Poisoning", "PoisoningResult", "SecurityCurve", "security_curve"]
