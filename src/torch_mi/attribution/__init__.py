"""Attribution graphs through a local replacement model (SPEC §8): transcoders replace the
MLPs, error nodes keep the forward exact, attention patterns and norm denominators are
frozen, and batched backward passes give the direct effect of every node on every other.
"""

from torch_mi.attribution.budget import AttributionEstimate, estimate_attribution
from torch_mi.attribution.engine import attribute
from torch_mi.attribution.graph import Graph
from torch_mi.attribution.intervention import InterventionOutput, feature_intervention
from torch_mi.attribution.prune import PruneResult, compute_graph_scores, prune_graph
from torch_mi.attribution.replacement import replacement_forward, replacement_spec

__all__ = [
    "AttributionEstimate",
    "Graph",
    "InterventionOutput",
    "PruneResult",
    "attribute",
    "compute_graph_scores",
    "estimate_attribution",
    "feature_intervention",
    "prune_graph",
    "replacement_forward",
    "replacement_spec",
]
