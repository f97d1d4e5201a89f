"""The planner's subchart: a webhook that stays reachable and certificates that stay put."""

from __future__ import annotations

from typing import Any

from helm import RELEASE, documents, render


def planner_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    name = f"{RELEASE}-planner"
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    return deployment


def webhook_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the apiserver and the planner need to agree on: the CA bundle and the served cert."""
    kinds = {"ValidatingWebhookConfiguration", "Deployment", "Service"}
    name = f"{RELEASE}-planner"
    return [d for d in docs if d["kind"] in kinds and d["metadata"]["name"] == name]


def test_the_planner_is_ready_while_its_webhook_answers_whatever_nats_does() -> None:
    docs = documents(render(None, "--set-json", "planner.planning.maxCostPerHour=12.5"))
    (container,) = planner_deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "webhook",
        "scheme": "HTTPS",
    }
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["KAIRYU_PLANNING__MAX_COST_PER_HOUR"] == "12.5"
    assert env["KAIRYU_PLANNING__ALLOW_HOST_ACCESS"] == "false"


def test_a_certificate_secret_of_ones_own_renders_the_same_every_time() -> None:
    args = [
        "--set",
        "planner.webhook.tls.secretName=my-webhook-tls",
        "--set",
        "planner.webhook.tls.caBundle=Q0EtUEVN",
    ]
    first, second = documents(render(None, *args)), documents(render(None, *args))
    # Nothing of the webhook's is generated at render time: GitOps sees no drift.
    assert webhook_objects(first) == webhook_objects(second)
    docs = first
    assert not [d for d in docs if d["kind"] == "Secret" and "webhook" in d["metadata"]["name"]]
    (hook,) = [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    assert hook["webhooks"][0]["clientConfig"]["caBundle"] == "Q0EtUEVN"
    (container,) = planner_deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert not [v for v in container["env"] if "SELF_ISSUED" in v["name"]]  # serves the given one
    assert not [d for d in docs if d["kind"] == "Role" and "webhook" in d["metadata"]["name"]]
    volumes = planner_deployment(docs)["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "webhook-tls",
        "secret": {"secretName": "my-webhook-tls", "optional": True},
    } in volumes


def _without_nats_passwords(rendered: str) -> str:
    """The render less the NATS user Secrets, whose passwords are drawn at render time unless
    global.nats.auth.createSecrets is off (docs/chart.md): not the webhook's business."""
    kept = [
        doc
        for doc in rendered.split("\n---\n")
        if not ("\nkind: Secret\n" in doc and "nats" in doc and "password:" in doc)
    ]
    return "\n---\n".join(kept)


def test_the_default_webhook_certificate_renders_the_same_every_time() -> None:
    first, second = render(None), render(None)
    # Byte for byte: `helm template` under Argo CD or Flux sees no drift, and the caBundle the
    # apiserver trusts never changes behind the planner's back.
    assert _without_nats_passwords(first) == _without_nats_passwords(second)
    docs = documents(first)
    # The Secret is rendered empty (the planner fills it; it may not create Secrets), with no
    # certificate drawn at render time.
    (secret,) = [d for d in docs if d["kind"] == "Secret" and "webhook" in d["metadata"]["name"]]
    assert "data" not in secret
    (hook,) = [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    assert "caBundle" not in hook["webhooks"][0]["clientConfig"]  # the planner sets it
    (container,) = planner_deployment(docs)["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["KAIRYU_WEBHOOK__SELF_ISSUED__SECRET"] == f"{RELEASE}-planner-webhook-tls"
    assert env["KAIRYU_WEBHOOK__SELF_ISSUED__CONFIGURATION"] == f"{RELEASE}-planner"
