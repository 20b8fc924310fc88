"""Command-line tools (``python -m hvp_utils.cli.<tool>``): ``bench``, ``rerun``, ``scaling``,
``notebook_tools`` and ``train_toy``; ``plan`` is what ``rerun`` prints before it runs. The
notebooks never import them."""
