"""mmcore.config: defaults, YAML + `--set` overrides, errors that name the key, digests."""

from __future__ import annotations

import pytest

from mmcore.config import (
    NOT_IN_KEY,
    STAGE_SECTION,
    STAGES,
    ConfigError,
    PipelineConfig,
    load_config,
)


def test_defaults_load():
    cfg = load_config()
    assert isinstance(cfg, PipelineConfig)
    assert cfg.seed == 0 and cfg.name == "default" and cfg.device == "cpu"
    assert cfg.data.source == "digits"
    assert cfg.data.split.val == pytest.approx(0.15)
    assert cfg.data.split.test == pytest.approx(0.20)
    assert cfg.data.on_bad_row == "skip"
    assert cfg.features.image_dim == 64
    assert cfg.shared_space.loss == "l2"
    assert cfg.training.fusion == "late"
    assert cfg.testing.batch_size == 512


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "name: tiny\n"
        "seed: 3\n"
        "data:\n"
        "  limit: 100\n"
        "  split:\n"
        "    val: 0.1\n"
        "training:\n"
        "  epochs: 2\n"
    )
    cfg = load_config(path, [
        "seed=7",  # override beats the file
        "data.split.test=0.3",  # dotted key into a section the file already has
        "features.lr=0.01",  # YAML float
        "training.register_model=false",  # YAML bool
        "data.classes=[cat, dog]",  # YAML list
        "data.path=",  # empty -> None
        "shared_space.loss=infonce",
    ])
    assert cfg.name == "tiny"
    assert cfg.seed == 7
    assert cfg.data.limit == 100
    assert cfg.data.split.val == pytest.approx(0.1)
    assert cfg.data.split.test == pytest.approx(0.3)
    assert cfg.features.lr == pytest.approx(0.01)
    assert cfg.training.register_model is False
    assert cfg.training.epochs == 2
    assert cfg.data.classes == ["cat", "dog"]
    assert cfg.data.path is None
    assert cfg.shared_space.loss == "infonce"
    # untouched values keep their defaults
    assert cfg.features.image_dim == 64


def test_empty_yaml_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == load_config()


@pytest.mark.parametrize("override, key", [
    ("data.bogus=1", "data.bogus"),
    ("bogus=1", "bogus"),
    ("features.text_noise.wrong=0.1", "features.text_noise"),
    ("data.text_noise.extra=0.1", "data.text_noise.extra"),
])
def test_unknown_key_is_an_error_naming_it(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert key in str(info.value)
    assert "Extra inputs are not permitted" in str(info.value)


@pytest.mark.parametrize("override, key", [
    ("seed=abc", "seed"),
    ("data.limit=many", "data.limit"),
    ("data.split.val=2", "data.split.val"),  # out of range
    ("training.mode=supervised", "training.mode"),  # not one of the literals
    ("data=3", "data"),  # a section given a scalar
    ("features.batch_size=[1, 2]", "features.batch_size"),
])
def test_wrong_type_is_an_error_naming_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert f"{key}:" in str(info.value)


def test_error_in_file_names_the_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("features:\n  image_dim: lots\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "features.image_dim" in str(info.value)


def test_text_noise_shares_over_one_is_an_error():
    with pytest.raises(ConfigError, match="data.text_noise"):
        load_config(overrides=["data.text_noise.uninformative=0.6",
                               "data.text_noise.ambiguous=0.6"])


def test_malformed_overrides_and_files(tmp_path):
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(overrides=["seed"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(overrides=["=3"])
    with pytest.raises(ConfigError, match="'seed' is not a section"):
        load_config(overrides=["seed=1", "seed.x=2"])
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listing)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("override", ["name=[oops", "data.classes=[a, b"])
def test_unparsable_override_value_is_a_config_error(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(overrides=[override])


def test_section_includes_seed_and_only_its_own_section():
    cfg = load_config(overrides=["seed=11", "features.image_dim=16"])
    for stage in STAGES:
        section = cfg.section(stage)
        assert section["seed"] == 11
        assert section["device"] == "cpu"
        own = getattr(cfg, STAGE_SECTION[stage]).model_dump(mode="json")
        own = {k: v for k, v in own.items() if k not in NOT_IN_KEY.get(STAGE_SECTION[stage], ())}
        assert {k: v for k, v in section.items() if k not in ("seed", "device")} == own
    assert cfg.section("feature_extraction")["image_dim"] == 16
    assert "image_dim" not in cfg.section("training")
    assert cfg.section("preprocessing")["split"] == {"val": 0.15, "test": 0.2}


def test_registration_settings_are_in_no_cache_key():
    """Whether (and as what) the model is registered changes no stage's output."""
    base = load_config()
    other = load_config(overrides=["training.register_model=false",
                                   "training.model_name=elsewhere"])
    assert all(base.section(stage) == other.section(stage) for stage in STAGES)
    assert "register_model" not in base.section("training")


def test_digest_is_stable_and_changes_with_values():
    a, b = load_config(), load_config()
    assert a.digest() == b.digest()
    assert len(a.digest()) == 16
    assert int(a.digest(), 16) >= 0  # hex
    assert load_config(overrides=["seed=1"]).digest() != a.digest()
    assert load_config(overrides=["training.hidden=65"]).digest() != a.digest()
    assert load_config(overrides=["data.split.val=0.1"]).digest() != a.digest()
    # where runs are stored, and where their parallel parts run, is not part of what they compute
    assert load_config(overrides=["run_dir=/elsewhere"]).digest() == a.digest()
    assert load_config(overrides=["dask.partitions=dask", "dask.workers=2"]).digest() == \
        a.digest()


def test_flat_uses_dotted_keys():
    flat = load_config(overrides=["data.classes=[a, b]"]).flat()
    assert all(isinstance(v, str) for v in flat.values())
    assert flat["seed"] == "0"
    assert flat["data.split.val"] == "0.15"
    assert flat["data.text_noise.wrong"] == "0.1"
    assert flat["training.register_model"] == "True"
    assert flat["data.classes"] == '["a", "b"]'
    assert flat["data.path"] == "None"
    assert "data" not in flat and "data.split" not in flat
    assert {k.split(".")[0] for k in flat} == {
        "name", "seed", "run_dir", "device", "data", "features", "shared_space", "training",
        "testing", "drift", "gate", "dask"}


def test_old_fusion_section_still_loads_under_its_new_name_with_a_warning(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("fusion:\n  loss: infonce\n  epochs: 7\n")
    with pytest.warns(FutureWarning, match="section 'fusion' is now 'shared_space'"):
        cfg = load_config(path)
    assert (cfg.shared_space.loss, cfg.shared_space.epochs) == ("infonce", 7)
    with pytest.warns(FutureWarning, match=r"shared_space\.temperature"):
        cfg = load_config(overrides=["fusion.temperature=0.5"])
    assert cfg.shared_space.temperature == 0.5
    assert cfg.training.fusion == "late"  # the operator keeps its name


def test_old_and_new_section_together_is_an_error_naming_both(tmp_path):
    path = tmp_path / "both.yaml"
    path.write_text("fusion:\n  loss: infonce\nshared_space:\n  loss: l2\n")
    with pytest.raises(ConfigError, match="'fusion' and 'shared_space' are the same section"):
        load_config(path)


def test_auto_epochs_follow_each_modality_step_budget():
    """28x28 images get their own, larger step budget; text keeps `auto_steps`; small data is
    capped at 20 epochs and large data gets at least 3."""
    from mmcore.config import FeaturesConfig
    from mmcore.modalities import MODALITIES

    cfg = FeaturesConfig()
    assert (cfg.auto_steps, cfg.image_auto_steps) == (1500, 2300)
    image, text = MODALITIES["image"], MODALITIES["text"]

    def epochs(spec, steps_per_epoch):
        return cfg.resolve_epochs(spec.epochs(cfg), steps_per_epoch, spec.step_budget(cfg))

    assert epochs(image, 801) == 3  # MNIST-size: 801 batches of 64, ceil(2300 / 801)
    assert epochs(image, 700) == 4  # a smaller split gets more epochs: ceil(2300 / 700)
    assert epochs(text, 797) == 3  # ceil(1500 / 797) = 2, raised to the minimum
    assert epochs(image, 18) == epochs(text, 18) == 20  # the built-in digits
    assert epochs(image, 5000) == 3
    assert FeaturesConfig(image_epochs=4).resolve_epochs(4, 801, 2300) == 4
