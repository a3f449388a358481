"""mmcore.learning_plan: which space, encoders and labels each learning mode uses."""

from __future__ import annotations

import pytest

from mmcore.config import TrainingConfig
from mmcore.learning_plan import encoder_recipe, labelled, plan_for, space_of

BOTH = ["image", "text"]


@pytest.mark.parametrize(("mode", "modality", "space", "train", "test", "labels"), [
    ("multimodal", "image", "joint", BOTH, BOTH, BOTH),
    ("unimodal", "image", "anchored:image", ["image"], ["image"], ["image"]),
    ("unimodal", "text", "anchored:text", ["text"], ["text"], ["text"]),
    ("cross_modal", "image", "anchored:image", ["image"], ["text"], ["image"]),
    ("cross_modal", "text", "anchored:text", ["text"], ["image"], ["text"]),
])
def test_plans_of_the_modes(mode, modality, space, train, test, labels):
    cfg = TrainingConfig(mode=mode, modality=modality)
    plan = plan_for(cfg, BOTH)
    assert space_of(cfg) == plan.space == space
    assert (plan.mode, plan.train, plan.test, plan.labels_used) == (mode, train, test, labels)
    # A cross-modal result never used its test modality's labels.
    assert mode != "cross_modal" or not set(plan.test) & set(plan.labels_used)


def test_unimodal_and_cross_modal_share_the_space():
    uni = plan_for(TrainingConfig(mode="unimodal", modality="text"), BOTH)
    cross = plan_for(TrainingConfig(mode="cross_modal", modality="text"), BOTH)
    assert uni.space == cross.space and uni.train == cross.train


def test_encoder_recipes():
    assert encoder_recipe("joint", BOTH) == {"image": "labels", "text": "labels"}
    assert encoder_recipe("anchored:image", BOTH) == {"image": "labels", "text": "pairs:image"}
    assert encoder_recipe("anchored:text", BOTH) == {"image": "pairs:text", "text": "labels"}
    assert encoder_recipe("anchored:text", ["text"]) == {"text": "labels"}
    assert labelled("anchored:text", BOTH) == ["text"]
    with pytest.raises(ValueError, match="has only"):
        encoder_recipe("anchored:image", ["text", "audio"])


def test_one_modality_data():
    assert plan_for(TrainingConfig(mode="multimodal"), ["text"]).to_dict() == {
        "mode": "unimodal", "train": ["text"], "test": ["text"], "space": "joint",
        "labels_used": ["text"]}
    with pytest.raises(ValueError, match="needs two modalities"):
        plan_for(TrainingConfig(mode="cross_modal", modality="text"), ["text"])
    with pytest.raises(ValueError, match="has only"):
        plan_for(TrainingConfig(mode="unimodal", modality="image"), ["text"])


def test_status_names_a_change_of_learning_space(tmp_path):
    """Feature extraction and fusion keys carry the space: switching mode says so."""
    from mmcore.config import load_config
    from mmcore.io.parquet import write_json
    from tasks.engine.cache import _latest_path, miss_reason
    from tasks.engine.keys import stage_code, stage_key
    from tasks.stages.table import KEY_EXTRA

    joint = load_config(overrides=[f"run_dir={tmp_path}"])
    cross = load_config(overrides=[f"run_dir={tmp_path}", "training.mode=cross_modal"])
    uni = load_config(overrides=[f"run_dir={tmp_path}", "training.mode=unimodal"])
    for stage in ("feature_extraction", "shared_space"):
        assert KEY_EXTRA[stage](joint) == {"space": "joint"}
        assert KEY_EXTRA[stage](cross) == KEY_EXTRA[stage](uni) == {"space": "anchored:image"}
        keys = {name: stage_key(stage, c, {"preprocessing": "p"}, KEY_EXTRA[stage](c))
                for name, c in (("joint", joint), ("cross", cross), ("uni", uni))}
        assert keys["cross"] == keys["uni"] != keys["joint"]
        write_json(_latest_path(joint, stage), {
            "key": keys["joint"], "config": joint.section(stage),
            "upstream": {"preprocessing": "p"}, "code": stage_code(joint, stage),
            "extra": KEY_EXTRA[stage](joint)})
        assert miss_reason(cross, stage, keys["cross"], {"preprocessing": "p"},
                           KEY_EXTRA[stage](cross)) == \
            "learning space changed: joint -> anchored:image"
