"""kairyu_core.kube loads kubernetes_asyncio's client machinery without its ~900 generated modules.

Each check runs in a fresh interpreter: in this one, another test may have imported the package
whole already, and what is imported cannot be un-imported.
"""

import subprocess
import sys
import textwrap

GENERATED = ("kubernetes_asyncio.client.api.", "kubernetes_asyncio.client.models.")


def run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_kube_loads_no_generated_api_or_model() -> None:
    loaded = run(
        f"""
        import sys
        import kairyu_core.kube
        print(sorted(m for m in sys.modules if m.startswith({GENERATED!r})))
        """
    )
    assert loaded == "[]"


def test_the_client_and_config_parts_kairyu_uses_are_the_real_ones() -> None:
    out = run(
        """
        from kairyu_core.kube import _sdk
        from kubernetes_asyncio.client import ApiClient, ApiException, Configuration
        from kubernetes_asyncio.client import api_client, rest
        from kubernetes_asyncio.config import kube_config
        assert ApiClient is _sdk.ApiClient is api_client.ApiClient
        assert ApiException is _sdk.ApiException
        assert Configuration is _sdk.Configuration
        assert kube_config.ApiClient is ApiClient and rest.RESTClientObject
        print("ok")
        """
    )
    assert out == "ok"


def test_anything_else_loads_the_whole_package_on_first_use() -> None:
    out = run(
        f"""
        import sys
        import kairyu_core.kube
        import kubernetes_asyncio
        from kubernetes_asyncio.client import CoreV1Api, V1Pod
        from kubernetes_asyncio.client.models import V1Pod as model
        from kubernetes_asyncio.watch import Watch
        # api_client deserializes a typed response so:
        assert getattr(kubernetes_asyncio.client.models, "V1Status").__name__ == "V1Status"
        assert model is V1Pod and CoreV1Api.__name__ == "CoreV1Api" and Watch
        assert kubernetes_asyncio.__version__ and kubernetes_asyncio.client.__all__
        assert any(m.startswith({GENERATED!r}) for m in sys.modules)
        try:
            kubernetes_asyncio.client.NoSuchThing
        except AttributeError:
            print("ok")
        """
    )
    assert out == "ok"


def test_when_imported_whole_first_kube_still_works() -> None:
    out = run(
        """
        import kubernetes_asyncio
        from kubernetes_asyncio.client import V1Pod
        from kairyu_core.kube import _sdk
        assert _sdk.ApiClient is kubernetes_asyncio.client.ApiClient and V1Pod
        print("ok")
        """
    )
    assert out == "ok"


def test_no_proxy_or_netrc_lookup_per_request_unless_the_environment_has_one() -> None:
    """aiohttp's per-request lookups (a worker thread each) are off when they can find nothing."""
    code = """
        import asyncio
        from kairyu_core.kube import KubeClient, _sdk

        async def main():
            kube = KubeClient(_sdk.ApiClient(_sdk.Configuration()))
            print(kube.api.rest_client.pool_manager.trust_env)
            await kube.close()

        asyncio.run(main())
        """
    clean = (
        "import os\n"
        "for v in [v for v in os.environ if v.lower().endswith('_proxy') or v == 'NETRC']:\n"
        "    del os.environ[v]\n"
        "os.environ['HOME'] = '/nonexistent'\n"
    )
    quiet = run(clean + textwrap.dedent(code))
    assert quiet == "False"
    proxied = run(
        clean + "os.environ['HTTPS_PROXY'] = 'http://proxy:3128'\n" + textwrap.dedent(code)
    )
    assert proxied == "True"
