"""A server raises its soft descriptor limit to the hard one (``loop.py``): each agent
holds connections to it, and the connection budget is half the limit."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import resource
from meshlet.api.connection_limits import connection_budget
from meshlet.loop import raise_descriptor_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
print(connection_budget(), raise_descriptor_limit(), resource.getrlimit(
    resource.RLIMIT_NOFILE)[0], min(hard, 1 << 20), connection_budget())
"""


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    before, returned, now, expected, after = (int(v) for v in out)
    assert before == 32  # half of 64
    assert returned == now == expected
    assert after == min(16384, expected // 2)
