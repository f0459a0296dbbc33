from __future__ import annotations

import numpy as np
import pytest
import torch

from svrl_policy.config import OFT_PROMPT, get_preset
from svrl_policy.preprocess import ObservationError, Preprocessor, ProprioStats, format_prompt
from svrl_policy.tokenizer import ByteTokenizer, HFTokenizer


def test_byte_tokenizer_pads_to_a_fixed_length_with_a_mask() -> None:
    tok = ByteTokenizer(12)
    ids, mask = tok.encode(["hi", "a much longer prompt"])
    assert ids.shape == mask.shape == (2, 12)
    assert mask[0].sum() == 4 and mask[1].all()  # BOS h i EOS / truncated
    assert tok.decode(ids[0]) == "hi"
    with pytest.raises(TypeError):
        tok.encode("not a list")


def test_prompt_format_is_normalised_and_uses_the_template() -> None:
    assert format_prompt(OFT_PROMPT, "  Put the  RED cube\n") == (
        "In: What action should the robot take to put the red cube?\nOut:"
    )


def test_hf_tokenizer_from_local_files(tmp_path) -> None:
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "put": 2, "the": 3, "cube": 4}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        tmp_path
    )
    tok = HFTokenizer(tmp_path, max_length=6)
    ids, mask = tok.encode(["put the cube", "the"])
    assert ids.shape == (2, 6) and ids[0, :3].tolist() == [2, 3, 4] and mask.sum(1).tolist() == [3, 1]


def _pre(**overrides) -> Preprocessor:
    cfg = get_preset("debug", **overrides)
    stats = ProprioStats(mean=np.ones(15, np.float32), std=np.full(15, 2.0, np.float32))
    return Preprocessor(cfg, ByteTokenizer(cfg.max_text_len), stats)


def test_outputs_follow_the_model_input_contract() -> None:
    pre = _pre()
    obs = pre.example_observation(batch=3)
    obs["images"]["main"] = np.zeros((3, 100, 80, 3), np.uint8)  # other camera sizes are resized
    out = pre(obs)
    assert out["pixel_values"].shape == (3, 2, 3, 64, 64) and out["pixel_values"].dtype == torch.float32
    assert out["pixel_values"].min() >= -1 and out["pixel_values"].max() <= 1
    assert out["input_ids"].shape == out["attention_mask"].shape == (3, pre.config.max_text_len)
    np.testing.assert_allclose(out["proprio"].numpy(), np.clip((obs["proprio"] - 1) / 2, -5, 5), rtol=1e-6)


def test_single_observation_equals_a_batch_of_one() -> None:
    pre = _pre()
    batch = pre.example_observation(batch=1)
    single = {"images": {k: v[0] for k, v in batch["images"].items()}, "proprio": batch["proprio"][0],
              "instruction": batch["instruction"][0]}  # fmt: skip
    a, b = pre(batch), pre(single)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_augmentation_only_at_train_time_and_seeded() -> None:
    pre = _pre()
    obs = pre.example_observation(batch=4)
    assert torch.equal(pre(obs)["pixel_values"], pre(obs)["pixel_values"])
    t1 = pre(obs, train=True, generator=torch.Generator().manual_seed(1))["pixel_values"]
    t2 = pre(obs, train=True, generator=torch.Generator().manual_seed(1))["pixel_values"]
    assert torch.equal(t1, t2) and not torch.equal(t1, pre(obs)["pixel_values"])


def test_center_crop_applies_at_serve_time_too() -> None:
    pre = _pre(center_crop=0.5)
    img = np.zeros((1, 64, 64, 3), np.uint8)
    img[:, 16:48, 16:48] = 255  # the central half is white: after cropping everything is white
    obs = {
        "images": {"main": img, "wrist": img},
        "proprio": np.zeros((1, 15), np.float32),
        "instruction": ["x"],
    }
    assert (pre(obs)["pixel_values"] == 1).all()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o["images"].pop("wrist"), "camera 'wrist' missing"),
        (lambda o: o["images"].update(main=o["images"]["main"].astype(np.float32)), "must be uint8"),
        (lambda o: o.update(proprio=np.zeros((2, 14), np.float32)), r"expected \(2, 15\)"),
        (lambda o: o.pop("proprio"), "uses proprioception"),
        (
            lambda o: o.update(instruction=["only one"]),
            "has 2 frames but obs\\[.instruction.\\] has 1 entries",
        ),
    ],
)
def test_bad_observations_raise_clear_errors(mutate, message: str) -> None:
    pre = _pre()
    obs = pre.example_observation(batch=2)
    mutate(obs)
    with pytest.raises(ObservationError, match=message):
        pre(obs)


def test_every_simulator_instruction_fits_the_tiny_tokenizer() -> None:
    """Goal-suite tasks differ only in their last words: a truncated prompt would merge tasks."""
    from svrl_policy.config import get_preset
    from svrl_sim.tasks import all_tasks

    for preset in ("tiny", "tiny96", "debug"):
        tokenizer = ByteTokenizer(get_preset(preset).max_text_len)
        for task in all_tasks():
            _ids, mask = tokenizer.encode([task.instruction])
            assert mask.sum() == len(task.instruction.encode()) + 2, (preset, task.name)  # + BOS, EOS
