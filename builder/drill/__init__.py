"""Drills: rehearse break-glass against a simulated outage, with evidence a person can read.

``agent`` is the reference agent, ``standins`` the loopback identity provider
and protected service, ``scenario`` the six timed steps, ``report`` the
Markdown, HTML and JSON evidence, ``holders`` the share-holder check-in.
"""
