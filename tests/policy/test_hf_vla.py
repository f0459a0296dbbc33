"""The transformers-built VLA (small/oft layout) on tiny random configs, fully offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore")

from svrl_policy.codec import ActionCodec  # noqa: E402
from svrl_policy.config import get_preset  # noqa: E402
from svrl_policy.models.hf_vla import HFVLA, _prefix_causal_action_bidirectional  # noqa: E402
from svrl_policy.policy import Policy, build_tokenizer  # noqa: E402


def test_mask_is_causal_on_the_prefix_and_bidirectional_on_the_action_block() -> None:
    valid = torch.tensor([[True, True, False, True, True, True]])  # position 2 is padding
    mask = _prefix_causal_action_bidirectional(valid, n_act=2, dtype=torch.float32)[0, 0] == 0  # allowed
    assert mask[1, 0] and not mask[0, 1]  # prefix: causal
    assert mask[4, 5] and mask[5, 4]  # action block: both directions
    assert mask[4, :].tolist() == [True, True, False, True, True, True]  # sees the whole valid sequence
    assert not mask[:, 2].any()  # nobody attends to padding


def test_action_tokens_attend_to_later_action_tokens() -> None:
    """Parallel decoding: changing nothing but a later action position changes earlier action logits only if
    attention is bidirectional - checked through the mask on the real model by comparing with causal."""
    torch.manual_seed(0)
    policy = Policy(
        get_preset("debug-hf"), ActionCodec.fit(np.random.default_rng(0).normal(size=(50, 7)))
    ).eval()
    inputs = policy.preprocess(policy.preprocessor.example_observation(batch=1))
    lm = policy.model.lm
    captured = {}

    def hook(_module, args, kwargs):
        captured["mask"] = kwargs["attention_mask"]

    handle = lm.get_decoder().register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        policy(inputs)
    handle.remove()
    allowed = captured["mask"][0, 0] == 0
    n_act = policy.config.num_action_tokens
    assert allowed[-n_act, -1]  # first action token sees the last one
    assert not allowed[0, 1]  # the prefix stays causal


def test_pretrained_backbones_load_from_local_directories(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, SiglipVisionModel

    base = get_preset("debug-hf")
    with torch.device("cpu"):
        vision = HFVLA(base).vision
        lm = AutoModelForCausalLM.from_config(HFVLA(base).lm.config)
    vision.save_pretrained(tmp_path / "vision")
    lm.save_pretrained(tmp_path / "lm")
    vocab = {
        "[PAD]": 0,
        "[UNK]": 1,
        **{
            w: i + 2
            for i, w in enumerate(
                [
                    "in",
                    "what",
                    "action",
                    "should",
                    "the",
                    "robot",
                    "take",
                    "to",
                    "put",
                    "red",
                    "cube",
                    "on",
                    "plate",
                    "?",
                    "out",
                    ":",
                ]
            )
        },
    }
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        tmp_path / "lm"
    )

    cfg = base.replace(
        vision_pretrained=str(tmp_path / "vision"), text_pretrained=str(tmp_path / "lm"), tokenizer="hf"
    )
    model, loaded_cfg = HFVLA.from_pretrained_backbones(cfg)
    ref_v = SiglipVisionModel.from_pretrained(tmp_path / "vision").state_dict()
    for k, v in model.vision.state_dict().items():
        assert torch.equal(v, ref_v[k]), k
    assert loaded_cfg.text_config["hidden_size"] == 64 and loaded_cfg.text_config["model_type"] == "qwen2"

    codec = ActionCodec.fit(np.random.default_rng(0).normal(size=(50, 7)))
    policy = Policy(loaded_cfg, codec, tokenizer=build_tokenizer(loaded_cfg), model=model).eval()
    obs = policy.preprocessor.example_observation(batch=2)
    ckpt = policy.save_pretrained(tmp_path / "ck")
    assert (ckpt / "tokenizer" / "tokenizer.json").is_file()
    again = Policy.from_pretrained(
        ckpt
    )  # rebuilt from config dicts + stored tokenizer, no backbone paths read
    assert torch.equal(again.sample(obs, 0.0).tokens, policy.sample(obs, 0.0).tokens)
