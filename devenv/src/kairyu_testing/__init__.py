"""Test helpers shared by every package's tests; `plugin` is loaded by pytest (see pyproject)."""
