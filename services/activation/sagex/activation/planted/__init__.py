"""Planted-feature SAEs: ground truth for measuring explainers (`sage bench planted`).

``python -m sagex.activation.planted build --out DIR --arch topk`` probes each concept
on the embedded model's residual stream at the SAE hook, plants the probes that pass
as encoder rows among dead and noise fillers, writes ``DIR/sae`` (SAELens) and
``DIR/truth.json`` (index -> concept, never read by the services), and verifies it.
"""
