"""snowtrain's model server: `python -m snowtrain.serve --model-dir DIR` (contracts §4).

Serves one exported model directory (contracts §1) over HTTP:

- classifier: KServe v1 `POST /v1/models/{name}:predict` and Open Inference Protocol v2
  `POST /v2/models/{name}/infer` (+ `GET /v2/models/{name}`, `/v2/health/{live,ready}`);
- causal LM: OpenAI `POST /v1/completions` (`stream: true` for server-sent events);
- both: `GET /v1/models`, `GET /v1/models/{name}`, `/healthz`, `/readyz`, `/metrics`.

Modules: `settings` (command-line options), `model_dir` (which task a directory holds),
`runtime` (device, dtype, CPU threads), `models` (ClassifierModel / CompletionModel with
load/predict), `generation` (per-row stop strings and streaming inside one batched
generate), `batcher` (dynamic batching with a bounded queue), `schemas` (request bodies),
`errors` (one JSON error shape), `metrics` (Prometheus), `state` (what routes share:
model, batcher, lifecycle, limits), `kserve` and `completions` (protocol routes), `app`
(health, metrics, listing; wires it all), `__main__` (CLI, graceful SIGTERM).
"""
