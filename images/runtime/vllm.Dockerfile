# The vLLM runtime image: vLLM's own image plus KAITO's wrapper and multi-node script paths.
# Build from the repository root:  docker build -f images/runtime/vllm.Dockerfile .
# Only the wrapper is added (kairyu_runtime without its dependencies: the wrapper needs PyYAML,
# which vLLM already has), so vLLM, torch and CUDA stay exactly as vLLM's release built them.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.11.0
FROM ${VLLM_IMAGE}
COPY images/runtime /tmp/kairyu-runtime
RUN python3 -m pip install --no-cache-dir --no-deps /tmp/kairyu-runtime \
    && rm -rf /tmp/kairyu-runtime \
    && mkdir -p /workspace/vllm /workspace/weights /mnt/adapter
COPY images/runtime/entrypoints/vllm_inference_api.py /workspace/vllm/inference_api.py
COPY --chmod=0755 images/runtime/entrypoints/multi-node-serving.sh /workspace/vllm/multi-node-serving.sh
EXPOSE 5000
ENTRYPOINT []
CMD ["python3", "/workspace/vllm/inference_api.py"]
