"""Helpers shared by the tests, imported one way: ``from tests.helpers.<module> import ...``.

- :mod:`tests.helpers.env`: where the shared data lives, GPU detection, skip markers;
- :mod:`tests.helpers.data`: small real datasets for the loader tests;
- :mod:`tests.helpers.compare`: comparing target dicts (kernel vs reference);
- :mod:`tests.helpers.polys`: random flat polygon sets for the target tests.
"""
