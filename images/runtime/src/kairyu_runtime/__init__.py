"""kairyu's inference runtime: one model behind KAITO's /chat, OpenAI's and KServe v2's HTTP APIs.

It is the server of the `transformers` runtime image (KAITO starts it as
/workspace/tfs/inference_api.py) and lets tritonclient and OpenAI clients talk to a transformers
model unchanged. The vLLM image's KAITO wrapper lives in `vllm_entry`.
"""
