"""breakglass: immutable images with sealed, quorum-unsealed, audited break-glass access."""

__version__ = "0.1.0"
