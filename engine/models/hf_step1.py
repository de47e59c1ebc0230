"""transformers classes for an exported Step1 checkpoint (``trust_remote_code`` loaders).

Export copies this file as ``modeling_step1.py`` beside ``step1.py`` and ``config.py``; the
``auto_map`` in ``config.json`` points here, so these work on a machine without stepforge:

    AutoConfig.from_pretrained(dir, trust_remote_code=True)            # what vLLM reads
    AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)   # forward / training

The layers are those of ``step1.py``. Generation goes through stepforge's engines or vLLM, not
``model.generate``.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .cache import KVCache
from .config import Step1Config as _CoreConfig
from .step1 import RMSNorm, Step1Model


class Step1Config(PretrainedConfig):
    model_type = "step1"

    def __init__(self, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                 num_attention_heads=48, num_attention_groups=4, vocab_size=74752,
                 max_seq_len=32768, rms_norm_eps=1e-5, token_layout=None, **kwargs):
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_attention_groups = num_attention_groups
        self.vocab_size = vocab_size
        self.max_seq_len = max_seq_len
        self.rms_norm_eps = rms_norm_eps
        self.token_layout = token_layout
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)


def _core_config(config: Step1Config) -> _CoreConfig:
    names = {f.name for f in dataclasses.fields(_CoreConfig)} - {"extra", "torch_dtype"}
    d = {k: v for k, v in config.to_dict().items() if k in names and v is not None}
    return _CoreConfig(**d)


class Step1ForCausalLM(PreTrainedModel):
    config_class = Step1Config
    base_model_prefix = "model"
    _no_split_modules = ["Step1DecoderLayer"]
    supports_gradient_checkpointing = False

    def __init__(self, config: Step1Config):
        super().__init__(config)
        self.model = Step1Model(_core_config(config))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        with torch.no_grad():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, 0.02)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=None,
                labels=None, position_ids=None, logits_to_keep=0, **kwargs):
        if past_key_values is not None and not isinstance(past_key_values, KVCache):
            raise TypeError("Step1ForCausalLM keeps its own KVCache; generate with stepforge's "
                            "TorchEngine or vLLM rather than transformers' generate")
        cache = past_key_values
        if use_cache and cache is None:
            cache = KVCache.for_model(self.model, input_ids.shape[0], input_ids.shape[1])
        h = self.model(input_ids, cache, attention_mask, position_ids)
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits,
                                      past_key_values=cache if use_cache else None)
