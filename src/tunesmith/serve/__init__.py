"""`tunesmith serve`: an OpenAI-compatible server for base and tuned models, plus a local fine-tuning jobs API.

    app.py        FastAPI app factory and the inference routes
    guard.py      settings, API key, body limits, errors in OpenAI's shape
    files_api.py  file routes (uploads checked with the training reader)
    jobs_api.py   fine-tuning job routes
    schemas.py    pydantic request models (strict, unknown fields refused) and the OpenAI error shape
    responses.py  response shapes for /openapi.json
    registry.py   served names -> (engine, adapter); several adapters share one copy of their base
    batching.py   the engine: continuous batching with a KV cache, per-row sampling, streaming
    jobs.py       SQLite store for files, jobs, events and metrics under $TUNESMITH_HOME/serve
    worker.py     job supervisor (one job at a time) and the training process it starts

Everything here imports fastapi lazily from the CLI, so `tunesmith --help` stays instant.
"""
