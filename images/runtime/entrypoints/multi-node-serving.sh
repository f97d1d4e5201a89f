#!/bin/sh
# Ray cluster bring-up for multi-node vLLM (KAITO's /workspace/vllm/multi-node-serving.sh contract).
#   leader --ray_cluster_size=N --ray_port=P   start Ray's head, return once N nodes are alive
#   worker --ray_address=HOST --ray_port=P     join the leader (retrying until it is up) and block
set -eu

role=${1:-}
[ $# -gt 0 ] && shift
size=1
port=6379
address=""
for arg in "$@"; do
    case $arg in
        --ray_cluster_size=*) size=${arg#*=} ;;
        --ray_port=*) port=${arg#*=} ;;
        --ray_address=*) address=${arg#*=} ;;
        *) echo "multi-node-serving: unknown argument $arg" >&2; exit 2 ;;
    esac
done

alive_nodes() {
    python3 -c 'import ray; ray.init(address="auto", logging_level="ERROR"); print(sum(1 for n in ray.nodes() if n["Alive"]))'
}

case $role in
    leader)
        ray start --head --port="$port"
        until [ "$(alive_nodes 2>/dev/null || echo 0)" -ge "$size" ]; do
            echo "multi-node-serving: waiting for $size Ray nodes"
            sleep 5
        done
        ;;
    worker)
        [ -n "$address" ] || { echo "multi-node-serving: worker needs --ray_address" >&2; exit 2; }
        until ray start --address="$address:$port" --block; do
            echo "multi-node-serving: leader $address:$port not reachable yet"
            sleep 5
        done
        ;;
    *)
        echo "usage: multi-node-serving.sh leader|worker [--ray_cluster_size=N] [--ray_port=P] [--ray_address=HOST]" >&2
        exit 2
        ;;
esac
