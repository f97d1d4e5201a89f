"""The model: loading weights and adapters, and running one generation at a time.

transformers' `generate()` is blocking and not safe to run concurrently on one model, so requests
queue for a single worker thread; streaming hands text deltas from that thread to the event loop.
A client that goes away cancels its generation at the next token instead of holding the queue,
and the queue itself is bounded: past `max_queue` waiting generations a request is refused
(Busy, a 429) instead of waiting behind an ever longer line.

Once loaded, the process needs no model hub any more; `seal_hubs` makes sure it cannot reach one,
whatever a request or a library later asks for.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jinja2 import TemplateError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from kairyu_runtime.adapters import Adapter, AdapterError, discover
from kairyu_runtime.sampling import (
    GenerateRequest,
    GenerationLimits,
    RequestError,
    check_generate_kwargs,
    check_token_ids,
    token_budget,
)
from kairyu_runtime.settings import RuntimeSettings
from kairyu_runtime.stops import StopTrimmer

log = logging.getLogger(__name__)

COMBINED_ADAPTER = "combined_adapter"
# Tokenizers without a known limit report a huge sentinel (int(1e30)) as model_max_length.
_NO_LIMIT = 10_000_000
# No tokenizer we know makes tokens this long on average, so a prompt with more characters per
# context token cannot fit and is refused before tokenizing (which costs time in its length).
CHARS_PER_TOKEN = 32
# What the hub libraries read to stay off the network (huggingface_hub reads the first two
# once, at import, so seal_hubs also sets its constant).
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
FinishReason = Literal["stop", "length"]


class LoadError(RuntimeError):
    """The model or an adapter cannot be loaded; the server does not start."""


class BusyError(RuntimeError):
    """The wait queue is full; the caller is asked to come back later (429, Retry-After)."""


class AbandonedError(RuntimeError):
    """The caller went away before its generation started."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


class _Deltas(BaseStreamer):
    """Decodes new tokens as they come and passes on only whole characters."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, emit: Callable[[str], None]) -> None:
        self._tokenizer = tokenizer
        self._emit = emit
        self._ids: list[int] = []
        self._sent = 0
        self._prompt_skipped = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_skipped:  # generate() first hands over the prompt itself
            self._prompt_skipped = True
            return
        self._ids.extend(int(i) for i in value.reshape(-1).tolist())
        text = self._decoded()
        if not text.endswith("\ufffd"):  # an incomplete multi-byte character waits for more
            self._flush(text)

    def end(self) -> None:
        self._flush(self._decoded())

    def _decoded(self) -> str:
        return str(self._tokenizer.decode(self._ids, skip_special_tokens=True))

    def _flush(self, text: str) -> None:
        if len(text) > self._sent:
            self._emit(text[self._sent :])
            self._sent = len(text)


class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> bool:
        return self._event.is_set()


class Engine:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str,
        default_max_tokens: int,
        adapters: list[Adapter],
        limits: GenerationLimits | None = None,
        max_prompt_chars: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.adapters = adapters
        self.default_max_tokens = default_max_tokens
        self.limits = limits or GenerationLimits()
        self.context = _context_length(model, tokenizer)
        self.max_prompt_chars = max_prompt_chars or self.context * CHARS_PER_TOKEN
        self.vocabulary = max(len(tokenizer), int(getattr(model.config, "vocab_size", 0) or 0))
        eos = model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        if not self.tokenizer.chat_template:
            raise RequestError(
                "this model has no chat template; use the completions API or start the "
                "runtime with --chat_template"
            )
        if not messages:
            raise RequestError("messages must not be empty")
        try:
            rendered = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except (ValueError, TypeError, TemplateError) as err:
            # Templates refuse conversations they cannot format (raise_exception("Conversation
            # roles must alternate…")); the conversation came from the request.
            raise RequestError(f"the chat template refused the messages: {err}") from None
        return str(rendered)

    def check(self, request: GenerateRequest) -> None:
        """What can be refused before the request waits in the queue or is tokenized."""
        if len(request.prompt) > self.max_prompt_chars:
            raise RequestError(
                f"the prompt is {len(request.prompt)} characters; this server takes at most "
                f"{self.max_prompt_chars} (the model's context is {self.context} tokens)"
            )
        check_generate_kwargs(request.kwargs, self.limits)
        check_token_ids(request.kwargs, self.vocabulary)

    def generate(
        self,
        request: GenerateRequest,
        emit: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        templated: bool = False,
    ) -> Completion:
        """Blocking; runs on the worker thread. `emit` receives text deltas as they are made."""
        if cancel is not None and cancel.is_set():
            raise AbandonedError("the caller went away while the request waited")
        # Again here: every protocol's kwargs pass the allow-list right before generate().
        self.check(request)
        inputs = self.tokenizer(
            request.prompt, return_tensors="pt", add_special_tokens=not templated
        ).to(self.model.device)
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        if prompt_tokens == 0:
            raise RequestError("the prompt is empty")
        kwargs = token_budget(
            prompt_tokens=prompt_tokens,
            request=request,
            context=self.context,
            default=self.default_max_tokens,
        )
        trimmer = StopTrimmer(request.stop)
        if request.stop:
            kwargs.update(stop_strings=request.stop, tokenizer=self.tokenizer)
        if emit is not None:
            kwargs["streamer"] = _Deltas(self.tokenizer, lambda d: emit(trimmer.feed(d)))
        if cancel is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_Cancelled(cancel)])
        if request.seed is not None:
            torch.manual_seed(request.seed)
        try:
            with torch.inference_mode():
                # The model's class is only known at load time; generate() is on every causal LM.
                generate: Callable[..., torch.Tensor] = getattr(self.model, "generate")  # noqa: B009
                output = generate(**inputs, **kwargs)
        except (ValueError, TypeError, OverflowError) as err:
            # transformers validates generation flags by raising; they came from the request.
            raise RequestError(str(err)) from None
        new_ids = [int(i) for i in output[0][prompt_tokens:].tolist()]
        if emit is not None:
            emit(trimmer.finish())
            text = None
        else:
            whole = StopTrimmer(request.stop)
            decoded = str(self.tokenizer.decode(new_ids, skip_special_tokens=True))
            text = whole.feed(decoded) + whole.finish()
            trimmer = whole
        limit = kwargs.get("max_new_tokens") or kwargs.get("max_length", 0) - prompt_tokens
        ended = bool(new_ids) and new_ids[-1] in self._eos
        reason: FinishReason = (
            "stop" if ended or trimmer.stopped or len(new_ids) < limit else "length"
        )
        return Completion(
            text=text if text is not None else "",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(new_ids),
            finish_reason=reason,
        )


class Runner:
    """Queues generations for the engine's single worker thread, at most `max_queue` waiting.

    `on_done` sees every generation the worker finishes, on the worker thread, including one
    whose caller left: /metrics then counts the tokens the model really made.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_queue: int = 16,
        on_done: Callable[[Completion], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self._on_done = on_done
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting; released by the worker or by a cancelled wait

    @property
    def admitted(self) -> int:
        return self._admitted

    def _submit(self, job: Callable[[], Completion]) -> asyncio.Future[Completion]:
        with self._lock:
            if self._admitted > self.max_queue:  # one running, max_queue waiting
                raise BusyError(f"{self.max_queue} requests are already waiting for the model")
            self._admitted += 1
        try:
            future = self._pool.submit(self._counted, job)
        except BaseException:
            self._release()
            raise
        # Runs when the job ends, or at once when a waiting job is cancelled (its caller left).
        future.add_done_callback(lambda _: self._release())
        return asyncio.wrap_future(future)

    def _counted(self, job: Callable[[], Completion]) -> Completion:
        done = job()
        if self._on_done is not None:
            self._on_done(done)
        return done

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    async def complete(self, request: GenerateRequest, *, templated: bool = False) -> Completion:
        self.engine.check(request)
        cancel = threading.Event()
        future = self._submit(
            lambda: self.engine.generate(request, None, cancel, templated=templated)
        )
        try:
            return await future
        finally:
            cancel.set()

    async def stream(
        self, request: GenerateRequest, *, templated: bool = False
    ) -> AsyncGenerator[str | Completion]:
        """Text deltas, then the Completion (its text is empty: the deltas are the text)."""
        self.engine.check(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()

        def emit(delta: str) -> None:
            if delta:
                loop.call_soon_threadsafe(queue.put_nowait, delta)

        future = self._submit(
            lambda: self.engine.generate(request, emit, cancel, templated=templated)
        )
        # Runs on the loop after every delta scheduled before the worker finished.
        future.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (delta := await queue.get()) is not None:
                yield delta
            yield await future
        finally:
            cancel.set()
            future.cancel()  # a job still waiting leaves the queue now

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def load(settings: RuntimeSettings, env: Mapping[str, str]) -> Engine:
    source = settings.pretrained_model_name_or_path
    if not Path(source).is_dir() and not settings.allow_remote_files:
        raise LoadError(
            f"no model weights at {source}: it is not a local directory and downloading is off "
            "(start the runtime with --allow_remote_files to fetch it from a model hub)"
        )
    common: dict[str, Any] = {
        "local_files_only": not settings.allow_remote_files,
        "trust_remote_code": settings.trust_remote_code,
        "revision": settings.revision,
        # A start-up flag only: nothing a request says reaches from_pretrained.
        "cache_dir": settings.cache_dir,
    }
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=settings.torch_dtype, device_map=settings.device_map, **common
        )
    except (OSError, ValueError) as err:
        raise LoadError(f"cannot load the model from {source}: {err}") from err
    if settings.chat_template:
        tokenizer.chat_template = Path(settings.chat_template).read_text()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    adapters = discover(Path(settings.adapters_dir), env)
    if adapters:
        model = _with_adapters(model, adapters, settings.combination_type)
    model.train(False)  # inference mode for dropout and friends (what eval() does)
    log.info(
        "model loaded",
        extra={
            "model": settings.model_name,
            "device": str(model.device),
            "adapters": {a.name: a.strength for a in adapters},
        },
    )
    return Engine(
        model,
        tokenizer,
        name=settings.model_name,
        default_max_tokens=settings.default_max_tokens,
        adapters=adapters,
        limits=GenerationLimits(
            max_num_beams=settings.max_num_beams,
            max_num_return_sequences=settings.max_num_return_sequences,
        ),
        max_prompt_chars=settings.max_prompt_chars,
    )


def seal_hubs(environ: MutableMapping[str, str]) -> None:
    """From now on no hub library in this process reaches the network (called after load)."""
    import huggingface_hub.constants  # noqa: PLC0415 - the module whose import-time copy we fix

    for name in OFFLINE_ENV:
        environ[name] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True


def _with_adapters(model: Any, adapters: list[Adapter], combination: str) -> Any:
    """KAITO's recipe: load each adapter, merge them weighted by strength, keep only the merge."""
    from peft import PeftModel  # noqa: PLC0415 - only servers with adapters pay for the import

    names = [a.name for a in adapters]
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapters[0].path), adapter_name=names[0])
        for adapter in adapters[1:]:
            peft_model.load_adapter(str(adapter.path), adapter_name=adapter.name)
        peft_model.add_weighted_adapter(
            adapters=names,
            weights=[a.strength for a in adapters],
            adapter_name=COMBINED_ADAPTER,
            combination_type=combination,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise AdapterError(f"cannot apply adapters {', '.join(names)}: {err}") from err
    peft_model.set_adapter(COMBINED_ADAPTER)
    for name in names:
        peft_model.delete_adapter(name)
    return peft_model


def _context_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    configured = getattr(model.config, "max_position_embeddings", None)
    from_tokenizer = getattr(tokenizer, "model_max_length", None)
    candidates = [
        n for n in (configured, from_tokenizer) if isinstance(n, int) and 0 < n < _NO_LIMIT
    ]
    return min(candidates) if candidates else 2048
