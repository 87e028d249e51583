"""Technique keys: the one list both suites' registries must match exactly (a test checks it)."""

TECHNIQUES = ("baseline",)
