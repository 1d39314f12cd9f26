"""Cross-modal attention encoder, baselines and their SB3 features-extractor adapters.

    config = build(ExtractorConfig, yaml["model"], prefix="model.")
    names = env.unwrapped.sensor_names
    model = PPO("MultiInputPolicy", env, policy_kwargs=policy_kwargs(config, names))
    maps = attention_from_policy(model.policy, obs)  # AttentionMaps, no gradients
    heat = maps.camera_map(layer=-1)  # (B, gh, gw): the policy query over the patch grid

``config.name`` picks one of :data:`EXTRACTOR_NAMES`; the attention ones (``attention``,
``camera_only``, ``sensors_only``) also accept ``forward(obs, return_attention=True)``.
"""

from drive_attention.models.baselines import LateFusionEncoder
from drive_attention.models.config import ATTENTION_NAMES, EXTRACTOR_NAMES, ExtractorConfig
from drive_attention.models.encoder import AttentionMaps, CrossModalEncoder
from drive_attention.models.extractors import (
    CombinedBaseline,
    CrossModalExtractor,
    LateFusionExtractor,
    ModalityDropout,
    attention_from_policy,
    make_extractor,
    policy_extractor,
    policy_kwargs,
)
from drive_attention.models.fusion import FusionBlock, QueryReadout, TokenAttention
from drive_attention.models.tokenizers import CameraTokenizer, SensorLayout, SensorTokenizer

__all__ = [
    "ATTENTION_NAMES",
    "EXTRACTOR_NAMES",
    "AttentionMaps",
    "CameraTokenizer",
    "CombinedBaseline",
    "CrossModalEncoder",
    "CrossModalExtractor",
    "ExtractorConfig",
    "FusionBlock",
    "LateFusionEncoder",
    "LateFusionExtractor",
    "ModalityDropout",
    "QueryReadout",
    "SensorLayout",
    "SensorTokenizer",
    "TokenAttention",
    "attention_from_policy",
    "make_extractor",
    "policy_extractor",
    "policy_kwargs",
]
