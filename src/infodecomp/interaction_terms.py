"""What the interaction of two words is made of: the linear quantities (weights on i1, i2, i12),
which of them are contrasts, DiffusionPID's atoms, and what each means (nats). Constants only,
shared by :mod:`infodecomp.interactions` and the reports."""

from __future__ import annotations

# The linear quantities, each a combination of (i1, i2, i12): the weights on them.
LINEAR = {
    "first": (1, 0, 0),
    "second": (0, 1, 0),
    "joint": (0, 0, 1),
    "interaction": (1, 1, -1),
    "first_given_second": (0, -1, 1),
    "second_given_first": (-1, 0, 1),
    "difference": (1, -1, 0),
}
# The linear quantities that are contrasts, not informations of one condition against another:
# their intervals are symmetric (see estimators._estimate).
CONTRASTS = ("interaction", "difference")
ATOMS = ("redundancy", "unique_first", "unique_second", "synergy")

DEFINITIONS = {
    "first": "i(x; w1 | rest) = log p(x | rest + w1) - log p(x | rest)",
    "second": "i(x; w2 | rest) = log p(x | rest + w2) - log p(x | rest)",
    "joint": "i(x; w1, w2 | rest) = log p(x | prompt) - log p(x | rest)",
    "interaction": "i(x; w1; w2 | rest) = first + second - joint (> 0 redundant, < 0 synergistic)",
    "first_given_second": "i(x; w1 | rest + w2) = joint - second",
    "second_given_first": "i(x; w2 | rest + w1) = joint - first",
    "redundancy": "DiffusionPID: min(first, second)",
    "unique_first": "DiffusionPID: first - redundancy",
    "unique_second": "DiffusionPID: second - redundancy",
    "synergy": "DiffusionPID: joint - unique_first - unique_second - redundancy",
    "rest": "the prompt without both words",
    "pixel_atoms": "pixel atoms are the atoms of each pixel's informations: they do not sum to "
    "the image's atoms (a minimum is not additive); the linear quantities' maps do",
}
ESTIMATOR_NOTES = {
    "standard": "each value estimates this image's log-probability combination",
    "orthogonal": "each value agrees with the log-probability combination only on average over "
    "images (for one image it is not a log-ratio); use 'standard' for one image",
}
