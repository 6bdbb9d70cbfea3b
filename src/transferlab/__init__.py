"""transferlab: measure and explain how evasion and poisoning attacks transfer.

Built on Demontis et al., "Why Do Adversarial Attacks Transfer? Explaining Transferability of Evasion and
Poisoning Attacks" (USENIX Security 2019).
"""

__version__ = "0.1.0"
