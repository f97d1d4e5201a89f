"""KAITO's path for the vLLM wrapper (/workspace/vllm/inference_api.py)."""

from kairyu_runtime.vllm_entry import main

if __name__ == "__main__":
    main()
