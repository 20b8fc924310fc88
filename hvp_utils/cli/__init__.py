"""Command-line tools (``python -m hvp_utils.cli.<tool>``): ``bench``, ``rerun``, ``scaling``,
``notebook_tools`` and ``train_toy``. The notebooks never import them."""
