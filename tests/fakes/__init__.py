"""Stand-ins for optional packages (torchvision, timm) used by the adapter tests; see tests/test_models_adapters.py.

This folder is put on ``sys.path`` by a fixture only; it is never imported as ``tests.fakes``.
"""
