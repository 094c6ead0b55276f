"""Scripts run by the training environment's Python (.venv-train), not by litecoder's.

They import only torch, transformers and Axolotl (whose pinned dependencies cannot live in
litecoder's environment) and are invoked by file path with plain arguments.
"""
