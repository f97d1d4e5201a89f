"""KAITO's path for the transformers runtime server (/workspace/tfs/inference_api.py)."""

from kairyu_runtime.__main__ import main

if __name__ == "__main__":
    main()
