"""One speech response: its pieces generated in order and streamed as they are ready.

    reply = SpeechReply(service, prompts, "pcm", "sse", metrics, release)
    await reply.begin()                      # the first piece is generated (errors -> 4xx/5xx here)
    StreamingResponse(reply.body(), ...)     # pieces 2.. generate (as one batch) while piece 1 streams

An input split into several pieces (:mod:`pipelines.serve.text`) streams piece by piece in pcm and
wav (a wav stream then has a header of unknown length); flac, mp3 and opus are single files, so
their pieces are generated first and encoded as one. One piece streams in chunks of 0.6 s after it
is generated and decoded whole (the LM engines return whole generations).
"""
from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np

from engine.tokens import GROUP_SECONDS
from pipelines.serve.audio import PCM_RATE, encode_chunks, pcm_chunks, streaming_wav_header
from pipelines.serve.metrics import Metrics
from pipelines.serve.service import Speech, SpeechService

CHUNK_GROUPS = 5  # 0.6 s of audio per streamed chunk
PROGRESSIVE = ("pcm", "wav")


class SpeechReply:
    """The pieces of one request and how they stream.

    Args:
        prompts: one prepared prompt per piece (``SpeechService.prepare``).
        response_format, stream_format: the request's.
        release: frees the request's concurrency slot (called once the body ends).
        done: extra fields of the ``speech.audio.done`` event (the instruction, the voice).
    """

    def __init__(self, service: SpeechService, prompts: list, response_format: str, stream_format: str,
                 metrics: Metrics, release, done: dict | None = None):
        self.service, self.prompts, self.format, self.stream_format = service, prompts, response_format, stream_format
        self.metrics, self.release, self.done = metrics, release, done or {}
        self.start = time.perf_counter()
        self.progressive = len(prompts) > 1 and response_format in PROGRESSIVE
        self.parts: list = []
        self.audio_seconds = 0.0
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.first_sent = False

    async def begin(self) -> None:
        """Generate the first piece (every piece where the format is a single file)."""
        if self.progressive:
            first = await self.service.speak(self.prompts[0])
            rest = [asyncio.ensure_future(self.service.speak(p)) for p in self.prompts[1:]]
            self.parts = [_done(first), *rest]
        else:
            spoken = await asyncio.gather(*(self.service.speak(p) for p in self.prompts))
            self.parts = [_done(_join(spoken))]

    def headers(self) -> dict:
        first = self.parts[0].result()
        rate = PCM_RATE if self.format == "pcm" else first.sample_rate
        headers = {"X-Sample-Rate": str(rate), "X-Pieces": str(len(self.prompts))}
        if len(self.parts) == 1:
            headers.update({"X-Audio-Seconds": f"{first.seconds:.3f}", "X-Finish-Reason": first.finish_reason})
        return headers

    async def body(self):
        """The response bytes: audio chunks, or SSE events ending with ``speech.audio.done``."""
        try:
            for i, part in enumerate(self.parts):
                try:
                    spoken = await part
                except Exception as exc:  # headers are sent: say it in the stream and end it
                    if self.stream_format == "sse":
                        yield _event({"type": "error", "error": {"message": f"piece {i + 1} of {len(self.parts)} "
                                      f"failed ({type(exc).__name__}: {exc})", "type": "server_error",
                                      "param": None, "code": "generation_failed"}})
                    return
                self._count(spoken)
                for chunk in await asyncio.to_thread(lambda: list(self._chunks(spoken, i))):
                    if not self.first_sent:
                        self.first_sent = True
                        self.metrics.first_audio.observe(time.perf_counter() - self.start)
                    yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}) \
                        if self.stream_format == "sse" else chunk
            if self.stream_format == "sse":
                usage = {**self.usage, "total_tokens": self.usage["input_tokens"] + self.usage["output_tokens"]}
                yield _event({"type": "speech.audio.done", "usage": usage, **self.done})
            wall = time.perf_counter() - self.start
            self.metrics.latency.labels(route="/v1/audio/speech").observe(wall)
            if self.audio_seconds:
                self.metrics.rtf.observe(wall / self.audio_seconds)
        finally:
            for part in self.parts:
                part.cancel()
            self.release()

    def _count(self, spoken: Speech) -> None:
        self.audio_seconds += spoken.seconds
        self.usage["input_tokens"] += spoken.prompt_ids
        self.usage["output_tokens"] += len(spoken.ids)
        self.metrics.audio_seconds.inc(spoken.seconds)
        self.metrics.generated_ids.inc(len(spoken.ids))

    def _chunks(self, spoken: Speech, index: int):
        chunk = int(CHUNK_GROUPS * GROUP_SECONDS * spoken.sample_rate)
        if not self.progressive:
            yield from encode_chunks(spoken.wav, spoken.sample_rate, self.format, chunk)
            return
        rate = PCM_RATE if self.format == "pcm" else spoken.sample_rate
        pieces = pcm_chunks(spoken.wav, spoken.sample_rate, rate, chunk)
        if self.format == "wav" and index == 0:
            yield streaming_wav_header(rate) + next(pieces, b"")
        yield from pieces


def _done(value) -> asyncio.Future:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut


def _join(parts: list[Speech]) -> Speech:
    """Several pieces as one utterance (for formats that are one file)."""
    if len(parts) == 1:
        return parts[0]
    return Speech(np.concatenate([p.wav for p in parts]), parts[0].sample_rate,
                  np.concatenate([p.ids for p in parts]), sum(p.prompt_ids for p in parts),
                  "stop" if all(p.finish_reason == "stop" for p in parts) else "length")


def _event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()
