"""Framework-free core of the study: data, specs, recipe, protocol, results, report, CLI.

Never imports torch or tensorflow (tests/test_shared_isolation.py enforces it).
"""
