"""Attacks: a registry of attack kinds and threat-model pieces (:mod:`transferlab.attacks.registry`), composable constraints with exact projections, objectives, and batched evasion attacks (the paper's
Algorithm 1 :class:`PGDLineSearch`, :class:`PGD`, :class:`FGSM`, :class:`MIFGSM`), and availability poisoning
(:class:`Poisoning`, one module per surrogate family in :mod:`transferlab.attacks.poisoning`)."""

from transferlab.attacks.base import AttackResult, EvasionAttack, steepest_direction
from transferlab.attacks.constraints import (Ball, Binary, Box, Constraint, FeatureAdditionOnly, Intersection, L1Ball,
                                             L2Ball, LinfBall, Mask, Quantize, dual_norm, lp_norm, parse_norm)
from transferlab.attacks.feature_addition import FeatureAddition
from transferlab.attacks.fgsm import FGSM
from transferlab.attacks.mifgsm import MIFGSM
from transferlab.attacks.objectives import Objective
from transferlab.attacks.pgd import PGD
from transferlab.attacks.pgd_line_search import PGDLineSearch
from transferlab.attacks.poisoning import Poisoning, PoisoningResult
from transferlab.attacks.registry import EVASION_ATTACKS, PIECES, evasion_attack, manipulable_mask, threat_model
from transferlab.attacks.security import SecurityCurve, security_curve

__all__ = ["AttackResult", "EvasionAttack", "steepest_direction", "Ball", "Binary", "Box", "Constraint",
           "FeatureAdditionOnly", "FeatureAddition", "Intersection", "L1Ball", "L2Ball", "LinfBall", "Mask", "Quantize", "dual_norm", "lp_norm",
           "parse_norm", "FGSM", "MIFGSM", "Objective", "PGD", "PGDLineSearch", "Poisoning", "PoisoningResult", "SecurityCurve", "security_curve",
           "EVASION_ATTACKS", "PIECES", "evasion_attack", "manipulable_mask", "threat_model"]
