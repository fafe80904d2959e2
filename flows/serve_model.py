"""`rnnflow serve-model`: a model's champion behind HTTP (FastAPI on uvicorn, both already installed with Prefect).

    POST /predict  {"texts": ["...", ...]}  -> a label and class probabilities per text, and the run that answered
    GET  /health                            -> the champion being served, when it was loaded, any trouble following it

Wiring only: loading the champion and following champion.json is tasks/serving.py, predicting is tasks/predict.py
(the run's own Vocabulary.encode_raw, as training encoded). Requests over serve.max_texts texts or with a text over
serve.max_text_bytes are refused with 413, a body that is not {"texts": [strings]} with 422, each with a one-sentence
`detail`.
"""

from __future__ import annotations

import argparse
import errno
import socket
from typing import Any

from pydantic import BaseModel, ConfigDict

from flows.cli_parser import UsageError
from tasks.config import ServeConfig, load_config
from tasks.serving import ChampionServer, ServingError
from tasks.store import ArtifactsRootError, ArtifactStore

# JSON may spell one byte of text as six (\u00e9): a body longer than this cannot be within the limits.
JSON_BYTES_PER_TEXT_BYTE = 6


class PredictRequest(BaseModel):
    """POST /predict's body: {"texts": ["...", ...]} (module level, so FastAPI resolves the annotation as a body)."""

    model_config = ConfigDict(extra="forbid")
    texts: list[str]


def _field(location: Any) -> str:
    return ".".join(str(part) for part in location if part != "body") or "the body"


def build_app(server: ChampionServer, limits: ServeConfig) -> Any:
    """The FastAPI app answering with server's champion, within limits."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    app = FastAPI(title="rnnflow", summary="A model's champion: labels and class probabilities for texts.")
    most_body = limits.max_texts * (limits.max_text_bytes * JSON_BYTES_PER_TEXT_BYTE + 8) + 1024

    @app.middleware("http")
    async def refuse_huge_bodies(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > most_body:
            return JSONResponse(status_code=413, content={"detail": (
                f"The request body holds {int(length):,} bytes, more than {limits.max_texts} texts of at most "
                f"{limits.max_text_bytes:,} bytes can take (serve.max_texts, serve.max_text_bytes): send fewer or shorter texts per call.")})
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def one_sentence(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid"}
        where = _field(first.get("loc", ()))
        detail = (f"The request body is not {{\"texts\": [\"...\", ...]}} ({where}: {first.get('msg', 'invalid')}): "
                  "send a JSON object whose texts is a list of strings.")
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return server.health()

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict[str, Any]:
        _check_limits(request.texts, limits)
        return predictions(server, request.texts)

    return app


def _check_limits(texts: list[str], limits: ServeConfig) -> None:
    from fastapi import HTTPException

    if not texts:
        raise HTTPException(status_code=422, detail="The request holds no texts: send {\"texts\": [\"...\"]} with at least one text.")
    if len(texts) > limits.max_texts:
        raise HTTPException(status_code=413, detail=(
            f"The request holds {len(texts)} texts, more than serve.max_texts ({limits.max_texts}): split it into calls of at most {limits.max_texts}."))
    for number, text in enumerate(texts):
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limits.max_text_bytes:
            raise HTTPException(status_code=413, detail=(
                f"Text {number} holds {size:,} bytes, more than serve.max_text_bytes ({limits.max_text_bytes:,}): shorten it, or raise the limit."))


def predictions(server: ChampionServer, texts: list[str]) -> dict[str, Any]:
    """The answer to POST /predict: per text its label, that label's probability, every class's, and its token counts."""
    from tasks.predict import predict_texts

    served = server.current()  # one model for the whole request, even if a swap lands meanwhile
    frame = predict_texts(served.predictor, texts)
    labels = served.predictor.labels
    rows = [
        {
            "label": row["label"],
            "probability": float(row["probability"]),
            "probabilities": {label: float(row[f"probability_{label}"]) for label in labels},
            "tokens": int(row["tokens"]),
            "unknown_tokens": int(row["unknown_tokens"]),
            "truncated": bool(row["truncated"]),
            "empty": bool(row["empty"]),
        }
        for row in frame.to_dict("records")
    ]
    return {"model": served.model, "run_id": served.run_id, "predictions": rows}


def _check_port(host: str, port: int) -> None:
    """One sentence now, rather than uvicorn's log line and exit 1, when the address cannot be listened on."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        why = "it is in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        raise UsageError(f"Cannot listen on {host}:{port} ({why}): choose another with --port or --host.") from None


def cmd_serve_model(args: argparse.Namespace) -> int:
    """Load the champion, then serve until stopped (Ctrl-C or SIGTERM)."""
    import uvicorn

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be from 1 to 65535, not {args.port}.")
    limits = load_config(None, args.config, args.overrides).serve
    _check_port(args.host, args.port)
    try:
        store = ArtifactStore(args.artifacts)
        store.check_folder()
        server = ChampionServer(store, args.model, limits.check_seconds)
        served = server.start()
    except (ServingError, ArtifactsRootError) as error:
        raise UsageError(str(error)) from None
    print(f"serving model {served.model}: champion {served.run_id} ({', '.join(served.predictor.labels)}) from {store.where(store.runs_dir / served.run_id)}")
    print(f"POST http://{args.host}:{args.port}/predict  GET http://{args.host}:{args.port}/health", flush=True)
    uvicorn.run(build_app(server, limits), host=args.host, port=args.port, log_level="info")
    return 0
