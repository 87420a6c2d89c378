"""Primitives every role builds on: age, SLIP-39 shares, SSH signatures, secrets, canonical JSON,
bounded readers, errors and file I/O. Nothing here imports another part of breakglass."""
