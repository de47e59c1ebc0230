"""One speech response: its pieces generated in order and streamed as their audio settles.

    reply = SpeechReply(service, prompts, "pcm", "sse", metrics, release)
    await reply.begin()                      # the first audio is there (errors -> 4xx/5xx here)
    StreamingResponse(reply.body(), ...)     # the rest as the engine samples it

pcm and wav stream as the ids are sampled: each piece's audio is decoded incrementally
(:mod:`engine.codec.stream`) and sent as it settles, and the next piece generates while one is
sent (a wav stream has a header of unknown length; pcm is resampled to 24 kHz by one streaming
resampler, so it equals the whole utterance's resampling). flac, mp3 and opus are single files:
their pieces are generated and decoded whole first, then encoded as one and sent in pieces.
"""
from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np

from pipelines.serve.audio import PCM_RATE, encode_chunks, pcm16, streaming_wav_header
from pipelines.serve.metrics import Metrics
from pipelines.serve.service import Speech, SpeechService, Utterance

CHUNK_SECONDS = 0.6  # the byte pieces of a single-file format
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
        self.progressive = response_format in PROGRESSIVE
        self.rate = PCM_RATE if response_format == "pcm" else service.codec.sample_rate
        self.utterances: list[Utterance] = []
        self.whole: Speech | None = None
        self.audio_seconds = 0.0
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.first_sent = False
        self.completed = False  # the body ran to its end (else the client left)
        self._audio = None  # the first piece's audio iterator
        self._first: np.ndarray | None = None
        self._resampler = None

    async def begin(self) -> None:
        """Wait for the first audio (every piece's, where the format is a single file)."""
        if not self.progressive:
            spoken = await asyncio.gather(*(self.service.speak(p) for p in self.prompts))
            self.whole = _join(spoken)
            return
        self._next_piece()
        self._audio = self.utterances[0].audio()
        self._first = await anext(self._audio, None)

    def headers(self) -> dict:
        headers = {"X-Sample-Rate": str(self.rate), "X-Pieces": str(len(self.prompts))}
        if self.whole is not None:
            headers.update({"X-Audio-Seconds": f"{self.whole.seconds:.3f}",
                            "X-Finish-Reason": self.whole.finish_reason})
        return headers

    async def body(self):
        """The response bytes: audio chunks, or SSE events ending with ``speech.audio.done``."""
        try:
            chunks = self._progressive() if self.progressive else self._single_file()
            try:
                async for chunk in chunks:
                    if not self.first_sent:
                        self.first_sent = True
                        self.metrics.first_audio.observe(time.perf_counter() - self.start)
                    yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}) \
                        if self.stream_format == "sse" else chunk
            except Exception as exc:  # headers are sent: say it in the stream and end it
                if self.stream_format == "sse":
                    yield _event({"type": "error", "error": {"message": f"generation failed ({exc})",
                                  "type": "server_error", "param": None, "code": "generation_failed"}})
                return
            if self.stream_format == "sse":
                usage = {**self.usage, "total_tokens": self.usage["input_tokens"] + self.usage["output_tokens"]}
                yield _event({"type": "speech.audio.done", "usage": usage, **self.done})
            wall = time.perf_counter() - self.start
            self.metrics.latency.labels(route="/v1/audio/speech").observe(wall)
            if self.audio_seconds:
                self.metrics.rtf.observe(wall / self.audio_seconds)
            self.completed = True
        finally:
            if not self.completed:
                self.metrics.cancelled.inc()
            self.cancel()
            self.release()

    def cancel(self) -> None:
        """Take every piece still generating out of the engine."""
        for utterance in self.utterances:
            utterance.cancel()

    # -- pcm and wav: pieces as they are sampled ----------------------------------------------
    async def _progressive(self):
        if self.format == "pcm":
            import soxr

            self._resampler = soxr.ResampleStream(self.service.codec.sample_rate, PCM_RATE, 1, dtype="float32")
        else:
            yield streaming_wav_header(self.rate)
        audio = self._audio
        for i in range(len(self.prompts)):
            if i:
                audio = self.utterances[i].audio()
            self._next_piece()
            first, self._first = self._first, None
            if first is not None:
                yield self._bytes(first, last=False)
            async for samples in audio:
                yield self._bytes(samples, last=False)
            self._count(self.utterances[i].speech)
        if self._resampler is not None:
            tail = self._bytes(np.zeros(0, np.float32), last=True)
            if tail:
                yield tail

    def _next_piece(self) -> None:
        """Start the next piece that is not started (the one after the piece being sent)."""
        if len(self.utterances) < len(self.prompts):
            self.utterances.append(self.service.start(self.prompts[len(self.utterances)], stream=True))

    def _bytes(self, samples: np.ndarray, last: bool) -> bytes:
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        return pcm16(samples)

    # -- flac, mp3, opus: one file -------------------------------------------------------------
    async def _single_file(self):
        spoken = self.whole
        self._count(spoken)
        chunk = int(CHUNK_SECONDS * spoken.sample_rate)
        for piece in await self.service.off_loop(lambda: list(encode_chunks(spoken.wav, spoken.sample_rate,
                                                                             self.format, chunk))):
            yield piece

    def _count(self, spoken: Speech | None) -> None:
        if spoken is None:
            return
        self.audio_seconds += spoken.seconds
        self.usage["input_tokens"] += spoken.prompt_ids
        self.usage["output_tokens"] += len(spoken.ids)
        self.metrics.audio_seconds.inc(spoken.seconds)
        self.metrics.generated_ids.inc(len(spoken.ids))


def _join(parts: list[Speech]) -> Speech:
    """Several pieces as one utterance (for formats that are one file)."""
    if len(parts) == 1:
        return parts[0]
    return Speech(np.concatenate([p.wav for p in parts]), parts[0].sample_rate,
                  np.concatenate([p.ids for p in parts]), sum(p.prompt_ids for p in parts),
                  "stop" if all(p.finish_reason == "stop" for p in parts) else "length")


def _event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()
