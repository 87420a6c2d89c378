"""The release role: parse the spec, seal, render, build, sign, verify, inspect and bump."""
