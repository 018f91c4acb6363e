"""Exports of SAGE results to the formats researchers already use.

``neuronpedia``: Neuronpedia's feature upload payloads (explanations, top activations)
plus ``ExplanationScore``-shaped score rows. ``delphi``: a delphi-style result folder,
one file per latent. Both take a ``sagex.report.Report`` (from ``sagex.report.collect``)
and have a reader that round-trips what they wrote.
"""

from sagex.export import delphi, neuronpedia
from sagex.export.target import Target

__all__ = ["Target", "delphi", "neuronpedia"]
