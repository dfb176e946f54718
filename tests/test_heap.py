"""`e2a serve` settles its heap once started (`e2a_gateway.startup.settle_heap`): what start-up
loaded is frozen out of the cycle collector's sight, and the youngest generation is collected
less often.
Checked in a fresh interpreter, so that the test process's own collector is left alone.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.backend_independent

PROBE = """
import gc
from e2a_gateway.startup import YOUNG_COLLECTION_THRESHOLD, settle_heap
before = gc.get_threshold()
assert gc.get_freeze_count() == 0
settle_heap()
after = gc.get_threshold()
print(gc.get_freeze_count() > 10_000, after == (YOUNG_COLLECTION_THRESHOLD, *before[1:]))
"""


def test_settle_heap_freezes_what_start_up_loaded_and_collects_young_objects_less_often() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["True", "True"], done.stderr
