"""Test-wide settings.

Hypothesis runs derandomised by default, so a run on CI and a run here draw the same
examples and a red build can be reproduced; ``HYPOTHESIS_PROFILE=explore`` draws fresh
examples (and more of them) to hunt for new failures. Deadlines are off: the machine is
shared and speed is measured by ``make bench``, not asserted in tests.
"""

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
