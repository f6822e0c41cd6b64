"""The agent's kubernetes-asyncio client: the library's classes, imported on first use.

Each check runs in a fresh interpreter: what is imported is decided once per process.
"""

from __future__ import annotations

import json
import subprocess
import sys


def _run(code: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_an_agent_process_imports_neither_every_kubernetes_model_nor_grpc() -> None:
    seen = _run(
        "import json, sys\n"
        "import federation.app.process\n"
        "from federation.adapters import kube_client\n"
        "from federation.adapters.kube import Kube\n"
        "c = kube_client.client\n"
        "c.V1DeleteOptions, c.V1Preconditions, c.CoreV1Api, c.CustomObjectsApi  # what Kube uses\n"
        "print(json.dumps({'lazy': kube_client.lazily_loaded(),\n"
        "  'models': sum(m.startswith('kubernetes_asyncio.client.models.') for m in sys.modules),\n"
        "  'apis': sum(m.startswith('kubernetes_asyncio.client.api.') for m in sys.modules),\n"
        "  'grpc': 'grpc' in sys.modules}))"
    )
    # The library's own __init__ imports about 700 models and 60 APIs.
    models = seen.pop("models")
    assert seen == {"lazy": True, "apis": 2, "grpc": False}
    assert isinstance(models, int)
    assert models <= 5


def test_every_name_of_the_library_resolves_to_the_class_its_init_would_import() -> None:
    # What a release of kubernetes-asyncio that moved a class would break: the tables are read
    # from the library's own __init__ files, so each name must still lead to its class.
    seen = _run(
        "import json\n"
        "from federation.adapters import kube_client\n"
        "client = kube_client.client\n"
        "import ast, pathlib\n"
        "def declared(p):  # the library's own __all__, as its __init__ spells it\n"
        "    init = pathlib.Path(p.__path__[0], '__init__.py')\n"
        "    for node in ast.parse(init.read_text()).body:\n"
        "        if isinstance(node, ast.Assign) and node.targets[0].id == '__all__':\n"
        "            return ast.literal_eval(node.value)\n"
        "packages = (client, client.api, client.models)\n"
        "wrong = [f'{p.__name__}.{n}' for p in packages for n in declared(p)\n"
        "         if getattr(p, n).__name__ != n]\n"
        "unlisted = [p.__name__ for p in packages if set(p.__all__) != set(declared(p))]\n"
        "print(json.dumps({'lazy': kube_client.lazily_loaded(), 'wrong': wrong,\n"
        "  'unlisted': unlisted, 'rest': client.rest.__name__,\n"
        "  'names': len(client.__all__), 'version': client.__version__,\n"
        "  'same': client.V1Service is client.models.V1Service}))"
    )
    assert seen["lazy"] is True
    assert seen["wrong"] == []
    assert seen["unlisted"] == []  # every name the library declares is in the lazy tables
    assert seen["rest"] == "kubernetes_asyncio.client.rest"  # a submodule as an attribute
    assert seen["same"] is True
    assert isinstance(seen["names"], int)
    assert seen["names"] > 500
    assert seen["version"] != "unknown"


def test_a_library_imported_before_is_left_as_it_is() -> None:
    seen = _run(
        "import json, sys\n"
        "import kubernetes_asyncio.client\n"
        "from federation.adapters import kube_client\n"
        "print(json.dumps({'lazy': kube_client.lazily_loaded(), 'again': kube_client.install(),\n"
        "  'same': kube_client.client is sys.modules['kubernetes_asyncio.client']}))"
    )
    assert seen == {"lazy": False, "again": False, "same": True}
