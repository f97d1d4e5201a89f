"""The HTTP server: KAITO's /chat, OpenAI's /v1, and KServe v2's /v2 over one loaded model.

Handlers translate a protocol into a GenerateRequest, await the runner and translate back; every
refusal is a 4xx in the caller's protocol's own error shape (OpenAI's {"error": {...}}, KServe's
{"error": "..."}, FastAPI's {"detail": ...} for KAITO's endpoints). What one request may cost is
bounded (RuntimeSettings' limits, docs/runtime.md): the body, an inflated KServe body, the number
of prompts, the wait queue (429), and a non-streaming generation whose caller went away stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive

from kairyu_runtime import kserve, sampling
from kairyu_runtime.engine import BusyError, Completion, Runner
from kairyu_runtime.guards import CLIENT_GONE, ApiError, ApiKey, BodyLimit, error_body
from kairyu_runtime.kaito_schema import ChatRequest
from kairyu_runtime.openai_schema import (
    ChatCompletionRequest,
    CompletionRequest,
    Usage,
    model_card,
    new_id,
    now,
)
from kairyu_runtime.sampling import GenerateRequest, RequestError
from kairyu_runtime.serving_metrics import Measure, Metrics
from kairyu_runtime.settings import RuntimeSettings

VERSION = "0.1.0"


def _error(
    path: str,
    status: int,
    message: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(path, status, message, code), status_code=status, headers=headers
    )


def _validation_message(errors: Any) -> str:
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the body was read already, so nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(http: Request, work: Coroutine[Any, Any, Completion]) -> Completion:
    """The work's result, or ApiError(499) and the work cancelled once the client has gone."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(http.receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ApiError(CLIENT_GONE, "the client closed the request")
    finally:
        for pending in (task, watch):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending


def create_app(  # noqa: PLR0915 - one route table
    runner: Runner, metrics: Metrics, settings: RuntimeSettings
) -> FastAPI:
    engine = runner.engine
    started = now()
    app = FastAPI(title="kairyu runtime", version=VERSION)
    for adapter in engine.adapters:
        metrics.adapters.labels(adapter.name).set(adapter.strength)
    metrics.admitted.set_function(lambda: runner.admitted)
    # One worker generates one request at a time: the others it admitted wait.
    metrics.vllm_running.labels(settings.model_name).set_function(lambda: min(runner.admitted, 1))
    metrics.vllm_waiting.labels(settings.model_name).set_function(
        lambda: max(runner.admitted - 1, 0)
    )
    # Added innermost first: Measure sees every answer, the key is checked before the body is read.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.api_key is not None and settings.api_key.get_secret_value():
        app.add_middleware(ApiKey, key=settings.api_key.get_secret_value())
    app.add_middleware(Measure, metrics=metrics)

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> JSONResponse:
        return _error(request.url.path, 400, str(err))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return _error(request.url.path, err.status, err.message, err.code, err.headers)

    @app.exception_handler(BusyError)
    async def busy(request: Request, err: BusyError) -> JSONResponse:
        return _error(
            request.url.path,
            429,
            f"the server is busy: {err}; retry later",
            "rate_limit_exceeded",
            {"Retry-After": str(settings.retry_after_seconds)},
        )

    @app.exception_handler(kserve.ProtocolError)
    async def protocol_error(request: Request, err: kserve.ProtocolError) -> JSONResponse:
        return _error(request.url.path, 400, str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        path = request.url.path
        status = 400 if path.startswith(("/v1/", "/v2")) else 422
        return _error(path, status, _validation_message(err.errors()))

    def check_model(name: str) -> None:
        if name != engine.name:
            raise ApiError(
                404,
                f"model {name!r} does not exist; this server serves {engine.name!r}",
                "model_not_found",
            )

    def check_prompts(count: int) -> None:
        if count > settings.max_prompts:
            raise ApiError(
                400,
                f"{count} prompts in one request; this server takes at most {settings.max_prompts}",
            )

    async def run(
        request: GenerateRequest, http: Request, *, templated: bool = False
    ) -> Completion:
        metrics.running.inc()
        try:
            done = await _unless_disconnected(http, runner.complete(request, templated=templated))
        finally:
            metrics.running.dec()
        return done

    async def start_stream(
        request: GenerateRequest, *, templated: bool = False
    ) -> AsyncIterator[str | Completion]:
        """Waits for the first item so that a refused request is a 400, not a broken stream."""
        began = time.perf_counter()
        metrics.running.inc()
        items = runner.stream(request, templated=templated)
        try:
            first = await anext(items)
        except BaseException:
            metrics.running.dec()
            await items.aclose()
            raise
        metrics.first_token.observe(time.perf_counter() - began)

        async def rest() -> AsyncIterator[str | Completion]:
            try:
                item: str | Completion = first
                while True:
                    yield item
                    item = await anext(items)
            except StopAsyncIteration:
                return
            finally:
                metrics.running.dec()
                await items.aclose()

        return rest()

    # ------------------------------------------------------------------ KAITO
    @app.get("/")
    async def root() -> dict[str, str]:
        return {"message": "Server is running"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "Healthy"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/chat")
    async def chat(body: ChatRequest, http: Request) -> dict[str, str]:
        if (body.prompt is None) == (body.messages is None):
            raise ApiError(400, "send either prompt (text generation) or messages (a conversation)")
        kwargs = body.generation_kwargs()
        if body.messages is not None:
            prompt = engine.render_chat([m.model_dump() for m in body.messages])
            request = sampling.from_kaito(prompt, kwargs, engine.limits)
            done = await run(request, http, templated=True)
            return {"Result": done.text}
        prompt = (body.prefix or "") + (body.prompt or "")
        done = await run(sampling.from_kaito(prompt, kwargs, engine.limits), http)
        return {"Result": prompt + done.text if body.return_full_text else done.text}

    # ------------------------------------------------------------------ OpenAI
    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(engine.name, started)]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        body: ChatCompletionRequest, http: Request
    ) -> dict[str, Any] | StreamingResponse:
        check_model(body.model)
        if body.n != 1:
            raise ApiError(400, "n must be 1: this server returns one choice per request")
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        request = sampling.from_openai(
            engine.render_chat(messages),
            max_tokens=body.limit,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stop,
            seed=body.seed,
        )
        ident, created = new_id("chatcmpl"), now()
        if body.stream:
            items = await start_stream(request, templated=True)
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return _sse(_chat_chunks(items, ident, created, engine.name, usage=usage))
        done = await run(request, http, templated=True)
        return {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": engine.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.text},
                    "finish_reason": done.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": Usage.of(done.prompt_tokens, done.completion_tokens).model_dump(),
        }

    @app.post("/v1/completions", response_model=None)
    async def completions(
        body: CompletionRequest, http: Request
    ) -> dict[str, Any] | StreamingResponse:
        check_model(body.model)
        if body.n != 1:
            raise ApiError(400, "n must be 1: this server returns one choice per prompt")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt must not be empty")
        check_prompts(len(prompts))

        def request_for(prompt: str) -> GenerateRequest:
            return sampling.from_openai(
                prompt,
                max_tokens=body.max_tokens,
                temperature=body.temperature,
                top_p=body.top_p,
                stop=body.stop,
                seed=body.seed,
            )

        ident, created = new_id("cmpl"), now()
        if body.stream:
            if len(prompts) != 1:
                raise ApiError(400, "streaming takes a single prompt")
            items = await start_stream(request_for(prompts[0]))
            usage = bool(body.stream_options and body.stream_options.include_usage)
            echo = prompts[0] if body.echo else ""
            return _sse(_completion_chunks(items, ident, created, engine.name, echo, usage=usage))
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for index, prompt in enumerate(prompts):
            done = await run(request_for(prompt), http)
            prompt_tokens += done.prompt_tokens
            completion_tokens += done.completion_tokens
            choices.append(
                {
                    "index": index,
                    "text": (prompt if body.echo else "") + done.text,
                    "finish_reason": done.finish_reason,
                    "logprobs": None,
                }
            )
        return {
            "id": ident,
            "object": "text_completion",
            "created": created,
            "model": engine.name,
            "choices": choices,
            "usage": Usage.of(prompt_tokens, completion_tokens).model_dump(),
        }

    # ------------------------------------------------------------------ KServe v2
    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "kairyu-runtime", "version": VERSION, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    async def v2_health() -> Response:
        return Response(status_code=200)

    @app.get("/v2/models/{model}")
    @app.get("/v2/models/{model}/versions/{version}")
    async def v2_model(model: str, version: str = "1") -> dict[str, Any]:
        check_version(model, version)
        return kserve.model_metadata(engine.name)

    @app.get("/v2/models/{model}/ready")
    @app.get("/v2/models/{model}/versions/{version}/ready")
    async def v2_model_ready(model: str, version: str = "1") -> Response:
        check_version(model, version)
        return Response(status_code=200)

    @app.post("/v2/models/{model}/infer")
    @app.post("/v2/models/{model}/versions/{version}/infer")
    async def v2_infer(model: str, request: Request, version: str = "1") -> Response:
        check_version(model, version)
        body = _decompress(
            await request.body(),
            request.headers.get("content-encoding"),
            settings.max_decompressed_bytes,
        )
        decoded = kserve.decode(body, request.headers.get(kserve.HEADER_LENGTH))
        if decoded.flag("stream"):
            raise ApiError(400, "stream=true needs a streaming endpoint; infer answers at once")
        params = decoded.texts("sampling_parameters")
        exclude = decoded.flag("exclude_input_in_output")
        texts = decoded.texts("text_input", required=True)
        check_prompts(len(texts))
        requests = [sampling.from_kserve(t, params[0] if params else None) for t in texts]
        outputs = []
        for text, generate in zip(texts, requests, strict=True):
            done = await run(generate, request)
            outputs.append(done.text if exclude else text + done.text)
        payload, headers = kserve.encode(model=engine.name, request=decoded.request, texts=outputs)
        media = "application/octet-stream" if headers else "application/json"
        return Response(payload, media_type=media, headers=headers)

    def check_version(model: str, version: str) -> None:
        if model != engine.name:
            raise ApiError(404, f"unknown model {model!r}; this server serves {engine.name!r}")
        if version not in ("", "1"):
            raise ApiError(404, f"model {model} has only version 1")

    return app


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Inflates at most `limit` + 1 bytes, so a small bomb never becomes a large buffer.

    Whatever the body holds beyond `limit` inflated bytes is a 413, including when the first
    gzip member ends exactly at the limit and another follows (RFC 1952 bodies may have several
    members); only a stream that ends early is a 400.
    """
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ApiError(415, f"Content-Encoding {encoding} is not supported (gzip, deflate)")
    too_large = ApiError(
        413, f"the {encoding} body inflates to more than {limit} bytes", "request_too_large"
    )
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflated = bytearray()
    remaining = body
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            # max_length is at least 1 here (0 would mean unlimited).
            inflated += inflater.decompress(remaining, limit + 1 - len(inflated))
            while inflater.unconsumed_tail and len(inflated) <= limit:
                inflated += inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(inflated))
        except zlib.error as err:
            raise ApiError(400, f"body is not valid {encoding}: {err}") from None
        if len(inflated) > limit:
            raise too_large
        if not inflater.eof:
            raise ApiError(400, f"body is not valid {encoding}: the stream is truncated")
        remaining = inflater.unused_data
        if not remaining:
            return bytes(inflated)
        if encoding != "gzip":
            raise ApiError(400, "body is not valid deflate: data follows the end of the stream")


def _sse(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        async for event in events:
            yield f"data: {json.dumps(event, separators=(',', ':'))}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream")


async def _chat_chunks(
    items: AsyncIterator[str | Completion], ident: str, created: int, model: str, *, usage: bool
) -> AsyncIterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    yield chunk({"role": "assistant", "content": ""})
    async for item in items:
        if isinstance(item, str):
            yield chunk({"content": item})
            continue
        yield chunk({}, item.finish_reason)
        if usage:
            yield {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": Usage.of(item.prompt_tokens, item.completion_tokens).model_dump(),
            }


async def _completion_chunks(
    items: AsyncIterator[str | Completion],
    ident: str,
    created: int,
    model: str,
    echo: str,
    *,
    usage: bool,
) -> AsyncIterator[dict[str, Any]]:
    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
        }

    if echo:
        yield chunk(echo)
    async for item in items:
        if isinstance(item, str):
            yield chunk(item)
            continue
        yield chunk("", item.finish_reason)
        if usage:
            body = chunk("")
            body["choices"] = []
            body["usage"] = Usage.of(item.prompt_tokens, item.completion_tokens).model_dump()
            yield body
