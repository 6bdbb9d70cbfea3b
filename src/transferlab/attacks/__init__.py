"""Attacks: a registry of attack kinds and threat-model pieces (:mod:`transferlab.attacks.registry`), composable
constraints with exact projections, objectives, batched evasion attacks (the paper's Algorithm 1
:class:`PGDLineSearch`, :class:`PGD`, :class:`FGSM`, :class:`MIFGSM`, :class:`FeatureAddition`), each with its own
validated settings model (:mod:`transferlab.attacks.settings`), security evaluation curves, and availability
poisoning (:class:`Poisoning`, one module per surrogate family in :mod:`transferlab.attacks.poisoning`)."""

from transferlab.attacks.base import AttackResult, EvasionAttack, steepest_direction
from transferlab.attacks.constraints import (Ball, Binary, Box, Constraint, FeatureAdditionOnly, Intersection, L1Ball,
                                             L2Ball, LinfBall, Mask, Quantize, dual_norm, lp_norm, parse_norm)
from transferlab.attacks.feature_addition import FeatureAddition, FeatureAdditionSettings
from transferlab.attacks.fgsm import FGSM, FGSMSettings
from transferlab.attacks.mifgsm import MIFGSM, MIFGSMSettings
from transferlab.attacks.objectives import Objective
from transferlab.attacks.pgd import PGD, PGDSettings
from transferlab.attacks.pgd_line_search import PGDLineSearch, PGDLineSearchSettings
from transferlab.attacks.poisoning import Poisoning, PoisoningResult, PoisoningSettings
from transferlab.attacks.registry import EVASION_ATTACKS, PIECES, evasion_attack, manipulable_mask, threat_model
from transferlab.attacks.security import SecurityCurve, better_of, other_class_start, security_curve
from transferlab.attacks.settings import AttackSettings

__all__ = ["AttackResult", "EvasionAttack", "steepest_direction", "Ball", "Binary", "Box", "Constraint",
           "FeatureAdditionOnly", "FeatureAddition", "FeatureAdditionSettings", "Intersection", "L1Ball", "L2Ball",
           "LinfBall", "Mask", "Quantize", "dual_norm", "lp_norm", "parse_norm", "FGSM", "FGSMSettings", "MIFGSM",
           "MIFGSMSettings", "Objective", "PGD", "PGDSettings", "PGDLineSearch", "PGDLineSearchSettings", "Poisoning",
           "PoisoningResult", "PoisoningSettings", "SecurityCurve", "security_curve", "better_of",
           "other_class_start", "AttackSettings", "EVASION_ATTACKS", "PIECES", "evasion_attack", "manipulable_mask",
           "threat_model"]
