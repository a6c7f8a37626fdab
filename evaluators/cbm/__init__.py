"""Concept bottleneck models and test-time intervention (Shin et al., ICML 2023, arXiv 2302.14260).

Modules, along the data path: ``data/`` (synthetic, led7digit, Zoo, CUB) -> ``models`` (g, f,
variants) -> ``training`` -> ``bottleneck`` (what f reads under interventions) -> ``criteria/``
(RAND, UCP, LCP, CCTP, ECTP, EUDTP) -> ``intervene`` (levels, curves) -> ``plots``; ``prune``
compresses g with :mod:`compress.algorithms.pruners`; ``store`` and ``workflows`` serve ``compress cbm``.
"""
