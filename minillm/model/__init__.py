"""Chapter 0: the model (one decoder for Llama/Qwen families) and its loader."""

from minillm.model.configs import NAMED_CONFIGS, ModelConfig
from minillm.model.llama import CausalLM
from minillm.model.loader import load_model

__all__ = ["CausalLM", "ModelConfig", "NAMED_CONFIGS", "load_model"]
