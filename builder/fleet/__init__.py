"""Fleet operations over a pyinfra inventory: status, audit collection, enrolment.

pyinfra is the engine: it reads the inventory, connects over SSH and runs
each probe on every host in parallel (gevent, bounded by ``parallel``). This
package only says what to read or change on a host and what the answers mean.
"""

from __future__ import annotations

from builder.fleet.inventory import Fleet, HostResult, open_fleet

__all__ = ["Fleet", "HostResult", "open_fleet"]
