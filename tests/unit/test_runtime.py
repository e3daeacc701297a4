"""app/runtime's process-wide set-up around the loop."""

from __future__ import annotations

import gc

from observer.app import runtime


def test_what_start_up_made_is_frozen_out_of_the_collector_before_the_loop():
    """quiet_collector: a full collection of start-up's objects (~12 ms for a watch here)
    must not come at an allocation of the loop; after it they are in the permanent
    generation, and garbage made before it is gone."""
    made = [[i] for i in range(5000)]          # long-lived, as start-up's objects are
    cycle = [None]
    cycle[0] = cycle                           # garbage only the collector can free
    del cycle
    before = gc.get_freeze_count()
    try:
        runtime.quiet_collector()
        assert gc.get_freeze_count() >= before + len(made)
        assert gc.collect() == 0               # the cycle was collected before the freeze
    finally:
        gc.unfreeze()
