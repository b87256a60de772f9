"""snowtrain's model server: `python -m snowtrain.serve --model-dir DIR` (README: "The model
server").

Serves one exported model directory (README: "The trainer contract", **Out**) over HTTP:

- classifier: KServe v1 `POST /v1/models/{name}:predict` and Open Inference Protocol v2
  `POST /v2/models/{name}/infer` (+ `GET /v2/models/{name}`, `/v2/health/{live,ready}`);
- causal LM: OpenAI `POST /v1/completions` and `POST /v1/chat/completions` (`stream: true`
  for server-sent events), continuously batched;
- both: `GET /v1/models`, `GET /v1/models/{name}`, `/healthz`, `/readyz`, `/metrics`, and
  KServe v1 liveness `GET /`.

Opt-in `--quantize int8` runs the model's nn.Linear layers as dynamic int8 on CPU (refused on
CUDA); see `runtime`.

Modules: `settings` (command-line options), `model_dir` (which task a directory holds),
`runtime` (device, dtype, CPU threads, int8 quantization), `models` (ClassifierModel /
CompletionModel with load/predict), `grouping` (a classifier batch split into padded forward
passes of least measured cost), `generation` (one completion's limit, stop strings and
streaming as its tokens arrive, for both schedulers), `continuous` (continuous batching of
completions on transformers' engine, per-request sampling, admission by KV cache budget),
`batcher` (dynamic batching with a bounded queue; a batch that fails is rerun one item at a
time; completions in `--batching lockstep`), `schemas` (request bodies, every list and string bounded by the
settings), `errors` (one JSON error shape), `auth` (optional bearer token, health checks and
metrics stay open), `metrics` (Prometheus), `state` (what routes
share: model, batcher, lifecycle, limits), `kserve` and `completions` (protocol routes),
`app` (health, metrics, listing; wires it all), `__main__` (CLI, graceful SIGTERM).
"""
