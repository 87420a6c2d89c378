"""Install a break-glass payload into any target with one pyinfra deploy.

``stage_payload`` writes the payload as a tree plus an index; ``provision``
runs ``install.py`` through pyinfra against ``@local``, ``@chroot/DIR`` or
``@ssh/HOST``. The Packer backend calls the same deploy from its build VM.
"""

from __future__ import annotations

from builder.vm.deploy.run import DEPLOY_SCRIPT, ProvisionResult, deploy_command, provision
from builder.vm.deploy.stage import EmergencyUser, stage_payload

__all__ = [
    "DEPLOY_SCRIPT",
    "EmergencyUser",
    "ProvisionResult",
    "deploy_command",
    "provision",
    "stage_payload",
]
