"""``stepforge serve``: a student behind OpenAI's speech API (see :mod:`pipelines.serve.app`)."""
from pipelines.serve.app import APIError, SpeechRequest, create_app
from pipelines.serve.audio import encode, encode_chunks, supported_formats
from pipelines.serve.instructions import free_text, speed_name, understand, understood
from pipelines.serve.metrics import Metrics
from pipelines.serve.service import DEFAULT_VOICE, Speech, SpeechService, VoiceNotFound

__all__ = ["APIError", "DEFAULT_VOICE", "Metrics", "Speech", "SpeechRequest", "SpeechService", "VoiceNotFound",
           "create_app", "encode", "encode_chunks", "free_text", "speed_name", "supported_formats", "understand",
           "understood"]
