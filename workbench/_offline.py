"""Keep every library this package imports off the network.

Imported first by ``workbench/__init__.py``: Weights & Biases, the Hugging Face hub and datasets would
otherwise try to reach the internet, which fails (slowly) on machines without it. Values already set by
the user win.
"""

import os

OFFLINE_ENV = {
    "WANDB_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)
