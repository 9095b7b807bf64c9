"""Pytest plugin: counts the inputs each property/fuzz test tried and prints them in the summary.

Test modules register it with ``pytest_plugins = ["fuzz_counts"]`` and call ``record(name)`` once per
generated input, so a CI log shows how much hostile input a green run actually covered.

PYTEST_DONT_REWRITE (test modules import it before pytest registers it as a plugin).
"""

from __future__ import annotations

from collections import Counter

INPUTS_TRIED: Counter[str] = Counter()


def record(name: str, n: int = 1) -> None:
    INPUTS_TRIED[name] += n


def pytest_terminal_summary(terminalreporter):
    if not INPUTS_TRIED:
        return
    terminalreporter.section("hostile inputs tried")
    for name, n in sorted(INPUTS_TRIED.items()):
        terminalreporter.write_line(f"{n:>8}  {name}")
    terminalreporter.write_line(f"{sum(INPUTS_TRIED.values()):>8}  total")
