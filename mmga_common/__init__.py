"""Small helpers shared by every package and entry point: quieting third-party noise at the entry points, and the
one step-based progress display both stages' Lightning trainers use.

Imports nothing from the project (corpus, cache, the stages and the bridge may all import it); only the standard
library and, for the progress display, Lightning and tqdm.
"""

from mmga_common.noise import quiet_third_party

__all__ = ["quiet_third_party"]
