"""Simulated Endpoint Pickers: real HTTP ``/metrics`` endpoints with the real EPP metric names.

One loopback server per simulated cluster serves every pool's metrics at
``/pools/<namespace>/<name>/metrics``. Clusters alternate between the classic
``inference_pool_*`` family and the llm-d router's ``llm_d_epp_*`` family, so the demo exercises
both through the real scraper.
"""

from __future__ import annotations

from federation.kit.sim.loads import LoadModel
from federation.kit.text_server import TextServer
from federation.model.loads import LoadSample
from federation.model.pools import PoolKey

CLASSIC = {
    "ready_pods": "inference_pool_ready_pods",
    "kv_cache_utilization": "inference_pool_average_kv_cache_utilization",
    "queue_size": "inference_pool_average_queue_size",
    "running_requests": "inference_pool_average_running_requests",
}
LLM_D = {
    "ready_pods": "llm_d_epp_ready_endpoints",
    "kv_cache_utilization": "llm_d_epp_average_kv_cache_utilization",
    "queue_size": "llm_d_epp_average_queue_size",
    "running_requests": "llm_d_epp_average_running_requests",
}
FLOW_CONTROL = "inference_extension_flow_control_pool_saturation"
# Counters both families' EPPs serve (llm-d's router is the GIE EPP), one series per objective.
COUNTERS = {
    "requests_total": "inference_objective_request_total",
    "completions_total": "inference_objective_request_duration_seconds_count",
}


def render_metrics(name: str, sample: LoadSample, family: dict[str, str]) -> str:
    """Prometheus text exposition of one pool's load, as an EPP would serve it."""
    lines = []
    for field, metric in family.items():
        lines.append(f"# HELP {metric} simulated EPP pool metric")
        lines.append(f"# TYPE {metric} gauge")
        lines.append(f'{metric}{{name="{name}"}} {getattr(sample, field)}')
    if family is LLM_D:
        lines.append(f"# TYPE {FLOW_CONTROL} gauge")
        lines.append(f'{FLOW_CONTROL}{{name="{name}"}} {sample.saturation}')
    for field, metric in COUNTERS.items():
        value = getattr(sample, field)
        if value is not None:  # split over two objectives: the scraper must sum the series
            half = value / 2
            labels = ('model_name="chat"', 'model_name="batch"')
            lines.extend(f"{metric}{{{label}}} {half}" for label in labels)
    return "\n".join(lines) + "\n"


def metrics_path(key: PoolKey) -> str:
    return f"/pools/{key.namespace}/{key.name}/metrics"


class SimEpp:
    def __init__(self, model: LoadModel, *, llm_d: bool) -> None:
        self.model = model
        self.family = LLM_D if llm_d else CLASSIC
        self.server = TextServer(self._render)

    def _render(self, path: str) -> tuple[int, str]:
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "pools" or parts[3] != "metrics":
            return 404, "not found\n"
        key = PoolKey(parts[1], parts[2])
        fault = self.model.faults.get(key)
        if fault is not None:
            return fault.status, fault.body if fault.body is not None else "error\n"
        return 200, render_metrics(key.name, self.model.sample(key), self.family)

    def url(self, key: PoolKey) -> str:
        return self.server.url(metrics_path(key))

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()
