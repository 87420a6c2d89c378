"""The host side of breakglass: request, unseal, expire, audit; it runs from the files an image carries.

Kept import-light on purpose: ``authorized-keys`` runs on every SSH login and
must start fast, so nothing heavy is imported here.
"""
