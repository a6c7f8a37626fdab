"""Concept selection criteria, one module each, registered by name in :data:`CRITERIA`.

Order of :data:`NAMES` is the order of the paper's tables: RAND, UCP, LCP, CCTP, ECTP, EUDTP.
"""

from evaluators.cbm.config import NAMES
from evaluators.cbm.criteria import cctp, ectp, eudtp, lcp, rand, ucp  # noqa: F401  (fill the registry)
from evaluators.cbm.criteria.base import CRITERIA, Criterion, ScoreContext, register

__all__ = ["CRITERIA", "NAMES", "Criterion", "ScoreContext", "register"]
