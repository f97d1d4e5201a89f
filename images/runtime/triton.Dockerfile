# The Triton runtime image: NVIDIA's Triton with the vLLM backend, pinned to the release kairyu is
# tested against. The deployer mounts the model repository (model.json + config.pbtxt) it renders
# into a ConfigMap and starts `tritonserver --model-repository=…`, so nothing else is added.
# Build from the repository root:  docker build -f images/runtime/triton.Dockerfile .
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.10-vllm-python-py3
FROM ${TRITON_IMAGE}
RUN mkdir -p /workspace/weights && chown 1000:1000 /workspace/weights
USER 1000
EXPOSE 5000 8001 8002
ENTRYPOINT []
CMD ["tritonserver", "--model-repository=/mnt/models", "--http-port=5000"]
