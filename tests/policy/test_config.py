from __future__ import annotations

import json

import pytest
import torch

from svrl_policy.config import ConfigError, PolicyConfig, get_preset, preset_names


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates_and_round_trips_through_json(name: str) -> None:
    cfg = get_preset(name)
    again = PolicyConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    assert cfg.num_action_tokens == cfg.chunk_len * cfg.action_dim


def test_tiny_preset_matches_the_design() -> None:
    cfg = get_preset("tiny")
    assert (cfg.chunk_len, cfg.action_dim, cfg.num_bins, cfg.image_size) == (8, 7, 256, 128)
    assert cfg.cameras == ("main", "wrist") and cfg.proprio_dim == 15
    assert get_preset("tiny96").image_size == 96


def test_unknown_preset_suggests_the_closest_name() -> None:
    with pytest.raises(KeyError, match="Did you mean 'tiny'"):
        get_preset("tiyn")


def test_validation_names_field_value_and_rule() -> None:
    with pytest.raises(ConfigError, match=r"image_size = 100: must be a multiple of patch_size \(16\)"):
        get_preset("tiny", image_size=100)
    with pytest.raises(ConfigError, match=r"action_dim = 8: action_space 'ee_delta' has 7 dims"):
        get_preset("tiny", action_dim=8)
    with pytest.raises(ConfigError, match="did you mean 'image_size'"):
        get_preset("tiny", image_sise=96)


def test_hf_action_tokens_are_the_last_256_vocabulary_ids() -> None:
    pytest.importorskip("transformers")
    from svrl_policy.models.hf_vla import HFVLA

    cfg = get_preset("oft")
    with torch.device("meta"):
        model = HFVLA(cfg)
    assert model.action_start == 32000 - 256  # Llama-2: ids 31744..31999, as in SimpleVLA-RL


@pytest.mark.parametrize(("name", "low", "high"), [("small", 0.5e9, 0.7e9), ("oft", 6.5e9, 7.6e9)])
def test_gpu_presets_build_offline_with_the_expected_size(name: str, low: float, high: float) -> None:
    pytest.importorskip("transformers")
    from svrl_policy.models import build_model, count_parameters

    with torch.device("meta"):  # shapes only: nothing is allocated or downloaded
        n = count_parameters(build_model(get_preset(name)))
    assert low < n < high


def test_tiny_parameter_budget() -> None:
    from svrl_policy.models import build_model, count_parameters

    assert 1e6 <= count_parameters(build_model(get_preset("tiny"))) <= 5e6
