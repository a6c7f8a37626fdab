"""The algorithms the papers describe, owned here: masks and pruners, block reconstruction,
sharpness-aware minimization, exact sums over ranks, non-finite checks. torch and core only."""
