"""The pass catalogue: every rewrite rkconvert knows, by name. Targets choose and order them."""

from .framework import GraphPass, HostProgram, PassReport, run_pass
from .host_time_projection import HostTimeProjection

CATALOGUE: dict[str, GraphPass] = {p.name: p for p in (HostTimeProjection(),)}

__all__ = ["CATALOGUE", "GraphPass", "HostProgram", "PassReport", "run_pass"]
