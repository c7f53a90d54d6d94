"""Read models of the event log: the projector, its tables, queries and stream frames.

    from projections import Projector, ReadModel, rebuild
    projector = Projector(store).start()
    reads = ReadModel(store.database, projector)
    reads.wait_for(position); reads.get_run(run_id)

Imports eventstore and flows, never actors or api (DESIGN §1).
"""

from projections.frames import Framer
from projections.queries import ReadModel
from projections.runner import Projector, RebuildStats, rebuild
from projections.tables import PROJECTION_VERSION

__all__ = ["PROJECTION_VERSION", "Framer", "Projector", "ReadModel", "RebuildStats", "rebuild"]
