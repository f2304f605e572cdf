import pytest

from em_spark.config import load_config
from em_spark.errors import ConfigError


def test_defaults_work_offline():
    config = load_config()
    assert config.lakehouse.root == "./lakehouse"
    assert config.mlflow.tracking_uri.startswith("sqlite:///")
    assert config.mode == "link"


def test_set_overrides_parse_like_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mode: dedupe\nlakehouse:\n  root: /tmp/a\n")
    config = load_config(path, ["lakehouse.root=/tmp/b", "spark.master=local[1]"])
    assert config.mode == "dedupe"
    assert config.lakehouse.root == "/tmp/b"
    assert config.spark.master == "local[1]"


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lakehouse:\n  rooot: x\n")
    with pytest.raises(ConfigError, match=r"lakehouse\.rooot: unknown key"):
        load_config(path)


def test_a_removed_option_is_named_as_removed():
    for item in ("train.pretrain.minutes=10", "train.pair_layout=interleaved",
                 "train.feature_score_hint=true", "train.feature_offset=true"):
        key = item.split("=")[0].rsplit(".minutes", 1)[0].replace(".", r"\.")
        with pytest.raises(ConfigError, match=rf"{key}: unknown key \(an option removed after measurements"):
            load_config(None, [item])
    assert load_config().train.similarity_hints is True  # kept: on by default


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"mode: "):
        load_config(None, ["mode=both"])


def test_conflicting_settings_are_named():
    with pytest.raises(ConfigError, match=r"train\.verdict_by: 'features' needs train\.prefilter: true"):
        load_config(base={"train": {"verdict_by": "features", "prefilter": False}})


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/em.yaml")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["mode"])


def test_invalid_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mode: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_a_preset_brings_its_recipe_where_the_config_is_silent():
    default = load_config().train
    minilm = load_config(overrides=["train.model=minilm-l6"]).train
    assert (default.learning_rate, default.similarity_hints) == (3e-4, True)
    assert (minilm.learning_rate, minilm.max_input_tokens, minilm.similarity_hints) == (8e-5, 160, False)
    assert (minilm.max_words_per_attribute, minilm.max_words_per_record) == (24, 48)
    assert (minilm.max_epochs, minilm.positive_weight, default.positive_weight) == (5, 3.0, None)
    chosen = load_config(overrides=["train.model=minilm-l6", "train.learning_rate=1e-4", "train.similarity_hints=true"])
    assert (chosen.train.learning_rate, chosen.train.similarity_hints, chosen.train.max_input_tokens) == (1e-4, True, 160)
