"""The admission webhook's Service, serving certificate and configuration fit together.

The serving certificate is checked with a real TLS handshake (Python's ssl module, in
memory): a client that trusts only the rendered caBundle must accept the server that
presents the rendered certificate under the Service's DNS name, and refuse another name.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

import pytest

from kaito_operator.handlers.admission import WEBHOOK_IDS

RELEASE = "acme-kaito"
NAMESPACE = "ml-platform"
CHART_KINDS = {
    "kaito-workspace": ["workspaces", "inferencesets"],
    "kaito-ragengine": ["ragengines"],
}


def webhook_objects(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    def one(kind: str) -> dict[str, Any]:
        [found] = [o for o in objects if o["kind"] == kind]
        return found

    return one("Service"), one("Secret"), one("ValidatingWebhookConfiguration")


def handshake(cert_pem: bytes, key_pem: bytes, ca_pem: bytes, hostname: str, tmp: Path) -> None:
    """Complete a TLS handshake between an in-memory client and server; raise on failure."""
    (tmp / "tls.crt").write_bytes(cert_pem)
    (tmp / "tls.key").write_bytes(key_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp / "tls.crt", tmp / "tls.key")
    client_context = ssl.create_default_context(cadata=ca_pem.decode())
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(client_in, client_out, server_hostname=hostname)
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            return
    raise AssertionError("TLS handshake did not complete")


@pytest.mark.parametrize("chart", sorted(CHART_KINDS))
def test_certificate_is_trusted_for_the_service_name(
    render: Any, chart: str, tmp_path: Path
) -> None:
    service, secret, configuration = webhook_objects(render(chart))
    data = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    for webhook in configuration["webhooks"]:
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == data["ca.crt"]

    host = f"{service['metadata']['name']}.{NAMESPACE}.svc"
    handshake(data["tls.crt"], data["tls.key"], data["ca.crt"], host, tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(data["tls.crt"], data["tls.key"], data["ca.crt"], "evil.example", tmp_path)


@pytest.mark.parametrize("chart", sorted(CHART_KINDS))
def test_configuration_targets_the_service_and_the_kind(render: Any, chart: str) -> None:
    objects = render(chart)
    service, secret, configuration = webhook_objects(objects)
    webhooks = configuration["webhooks"]
    assert len(webhooks) == len(CHART_KINDS[chart])
    for webhook, plural in zip(webhooks, CHART_KINDS[chart], strict=True):
        target = webhook["clientConfig"]["service"]
        assert target["name"] == service["metadata"]["name"]
        assert target["namespace"] == NAMESPACE
        assert target["port"] == service["spec"]["ports"][0]["port"]
        assert target["path"] == "/" + WEBHOOK_IDS[plural]
        [rule] = webhook["rules"]
        assert rule["apiGroups"] == ["kaito.sh"]
        [crd] = [
            o
            for o in objects
            if o["kind"] == "CustomResourceDefinition" and o["spec"]["names"]["plural"] == plural
        ]
        # The storage version only: with matchPolicy Equivalent the API server sends
        # requests made in the other served versions converted to it.
        assert rule["apiVersions"] == [v["name"] for v in crd["spec"]["versions"] if v["storage"]]
        assert webhook["matchPolicy"] == "Equivalent"
        assert rule["resources"] == [plural]
        assert set(rule["operations"]) == {"CREATE", "UPDATE"}
        assert webhook["failurePolicy"] == "Fail"
        assert webhook["sideEffects"] == "None"

    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    env = {var["name"]: var.get("value") for var in container["env"]}
    assert mount["mountPath"] == env["KAITO_OPERATOR_WEBHOOK_CERT_DIR"]
    assert mount["readOnly"] is True
