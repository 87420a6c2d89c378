"""Fleet operations over a pyinfra inventory: drift, status, audit collection, enrolment, rotation.

pyinfra is the engine: it reads the inventory, connects over SSH and runs
each probe on every host in parallel (gevent, bounded by ``parallel``). This
package only says what to read or change on a host and what the answers mean.
Nothing is imported here, so ``drift`` (used by drills and CI) does not load pyinfra.
"""
