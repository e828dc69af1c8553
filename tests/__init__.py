"""The test suite; helpers shared by several tests are modules of this package (import them as ``tests.x``)."""
