"""litecoder: config-driven synthesis of terminal-agent training data."""

import os

# LiteLLM (used through Harbor) otherwise downloads its price table at import, and waits on
# retries when offline. Set it to False to allow the download.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
