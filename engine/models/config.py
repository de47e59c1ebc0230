"""Student configs: ``Step1Config`` (sqrt-ALiBi, Step-Audio-TTS-3B layout) and ``LlamaStudentConfig``
(rotary embeddings, standard Llama layout), each with the presets ``tts-3b``, ``small`` and ``tiny``.

    >>> Step1Config.preset("tiny").num_attention_groups
    2

Plain dataclasses that read and write HF ``config.json`` dicts. This file imports nothing from the
project, so an exported Step1 directory can carry it for ``trust_remote_code`` loaders.
"""
from __future__ import annotations

import abc
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

# The compact student vocabulary: ByteTokenizer's 264 text ids, then the 1024 vq02 and 4096 vq06
# audio ids (engine.prompts.ByteTokenizer().layout().vocab_size).
COMPACT_VOCAB = 264 + 1024 + 4096
COMPACT_LAYOUT = {"text_size": 264, "vq02_size": 1024, "vq06_size": 4096, "vocab_size": COMPACT_VOCAB}

_DTYPES = ("float32", "float16", "bfloat16")


def _dims(name: str) -> dict:
    if name in ("tts-3b", "step-audio-tts-3b"):
        return dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                    num_attention_heads=48, groups=4, vocab_size=74752, max_seq_len=32768,
                    torch_dtype="bfloat16")
    if name == "small":
        return dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                    num_attention_heads=8, groups=2, vocab_size=COMPACT_VOCAB, max_seq_len=4096,
                    torch_dtype="float32", token_layout=dict(COMPACT_LAYOUT))
    if name == "tiny":
        return dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                    num_attention_heads=4, groups=2, vocab_size=COMPACT_VOCAB, max_seq_len=4096,
                    torch_dtype="float32", token_layout=dict(COMPACT_LAYOUT))
    raise ValueError(f"unknown preset {name!r}; choose one of tts-3b, small, tiny")


@dataclass
class _StudentConfig(abc.ABC):
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    vocab_size: int = COMPACT_VOCAB
    rms_norm_eps: float = 1e-5
    torch_dtype: str = "float32"
    bos_token_id: int = 1
    eos_token_id: int = 3
    pad_token_id: int = 0
    tie_word_embeddings: bool = False
    # {text_size, vq02_size, vq06_size, vocab_size} of engine.tokens.TokenLayout; None means the
    # upstream Step-Audio layout.
    token_layout: dict | None = None
    extra: dict = field(default_factory=dict, repr=False)

    model_type = ""
    architecture = ""
    required = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "vocab_size")

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"the {self.num_kv_heads} key/value groups")
        if self.torch_dtype not in _DTYPES:
            raise ValueError(f"torch_dtype {self.torch_dtype!r} is not one of {_DTYPES}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    @abc.abstractmethod
    def num_kv_heads(self) -> int:
        """Key/value heads (the GQA group count)."""

    @property
    @abc.abstractmethod
    def max_positions(self) -> int:
        """Longest sequence the model accepts."""

    def num_parameters(self) -> int:
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        layer = 2 * h * h + 2 * h * kv + 3 * h * self.intermediate_size + 2 * h
        return 2 * self.vocab_size * h + self.num_hidden_layers * layer + h

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a ``config.json`` dict; unknown keys are kept in ``extra``."""
        d = dict(d)
        if "torch_dtype" not in d and isinstance(d.get("dtype"), str):
            d["torch_dtype"] = d["dtype"]  # transformers 5 writes "dtype"
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: d.pop(k) for k in list(d) if k in names}
        for k in ("eos_token_id", "bos_token_id", "pad_token_id"):
            if isinstance(known.get(k), list):
                known[k] = known[k][0]
            if known.get(k, 0) is None:
                known.pop(k)
        return cls(**known, extra=d)

    @classmethod
    def from_pretrained(cls, path: str | Path):
        """Read ``path/config.json`` (or a json file path)."""
        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise ValueError(f"no config.json in {path}")
        try:
            d = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{file} is not valid JSON: {e}") from None
        found = d.get("model_type", cls.model_type)
        if found != cls.model_type:
            raise ValueError(f"{file} has model_type {found!r}; expected {cls.model_type!r}")
        missing = [k for k in cls.required if k not in d]
        if missing:
            raise ValueError(f"{file} lacks {', '.join(missing)} (model_type {cls.model_type!r})")
        try:
            return cls.from_dict(d)
        except TypeError as e:
            raise ValueError(f"{file}: {e}") from None

    def to_dict(self) -> dict:
        """The HF ``config.json`` dict."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}
        d = {"architectures": [self.architecture], "model_type": self.model_type}
        d.update({k: v for k, v in self.extra.items() if k not in d}, **fields)
        if d["token_layout"] is None:
            d.pop("token_layout")
        d["dtype"] = self.torch_dtype
        return d

    def save_pretrained(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "config.json.tmp"
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        tmp.replace(out / "config.json")


@dataclass
class Step1Config(_StudentConfig):
    """Step-Audio-TTS-3B architecture: sqrt-ALiBi attention, GQA over ``num_attention_groups``."""

    num_attention_groups: int = 2
    max_seq_len: int = 4096

    model_type = "step1"
    architecture = "Step1ForCausalLM"
    required = _StudentConfig.required + ("num_attention_groups",)

    @property
    def num_kv_heads(self) -> int:
        return self.num_attention_groups

    @property
    def max_positions(self) -> int:
        return self.max_seq_len

    @classmethod
    def preset(cls, name: str, **overrides) -> "Step1Config":
        d = _dims(name)
        d["num_attention_groups"] = d.pop("groups")
        return cls(**{**d, **overrides})


@dataclass
class LlamaStudentConfig(_StudentConfig):
    """The RoPE student: the Step1 weight layout plus rotary embeddings, loadable as HF Llama."""

    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0

    model_type = "llama"
    architecture = "LlamaForCausalLM"

    @property
    def num_kv_heads(self) -> int:
        return self.num_key_value_heads

    @property
    def max_positions(self) -> int:
        return self.max_position_embeddings

    @classmethod
    def preset(cls, name: str, **overrides) -> "LlamaStudentConfig":
        d = _dims(name)
        d["num_key_value_heads"] = d.pop("groups")
        d["max_position_embeddings"] = d.pop("max_seq_len")
        return cls(**{**d, **overrides})

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        rope = d.pop("rope_parameters", None) or d.pop("rope_scaling", None) or {}
        if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
            raise ValueError(f"rope scaling {rope} is not supported by the RoPE student")
        if "rope_theta" not in d and "rope_theta" in rope:
            d["rope_theta"] = rope["rope_theta"]
        d.setdefault("num_key_value_heads", d.get("num_attention_heads"))  # HF's default
        for k in ("hidden_act", "attention_bias", "mlp_bias", "head_dim"):
            _check_llama_key(d, k)
        return super().from_dict(d)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(hidden_act="silu", attention_bias=False, mlp_bias=False, head_dim=self.head_dim,
                 rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta})
        return d


def _check_llama_key(d: dict, key: str) -> None:
    expected = {"hidden_act": "silu", "attention_bias": False, "mlp_bias": False}
    value = d.pop(key, None)
    if key == "head_dim":
        if value is not None and value * d["num_attention_heads"] != d["hidden_size"]:
            raise ValueError(f"head_dim {value} x heads must equal hidden_size {d['hidden_size']}")
    elif value is not None and value != expected[key]:
        raise ValueError(f"{key}={value!r} is not supported by the RoPE student ({expected[key]!r})")
