import pytest

from vtp_bench.config import ConfigError, config_from_dict, list_experiments, load_config, to_dict


def test_experiment_loads_with_overrides():
    cfg = load_config("frozen_synth", ["trainer.max_steps=20", "data.batch_size=8"])
    assert cfg.trainer.max_steps == 20
    assert cfg.data.batch_size == 8
    assert cfg.method.name == "frozen"
    assert cfg.method.temperature == 0.05  # from the experiment file
    assert cfg.name == "frozen_synth"


def test_unknown_experiment_lists_known():
    with pytest.raises(ConfigError) as e:
        load_config("nope_synth")
    assert "frozen_synth" in str(e.value)


@pytest.mark.parametrize(
    "override,key",
    [("data.batch_sise=8", "data.batch_sise"), ("method.tempreature=0.1", "method.tempreature"),
     ("optimm.lr=1", "optimm"), ("trainer.max_stepz=3", "trainer.max_stepz")],
)
def test_unknown_key_is_named(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("frozen_synth", [override])
    assert key in str(e.value)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError) as e:
        load_config("frozen_synth", ["data.batch_size=eight"])
    assert "data.batch_size" in str(e.value)


def test_unknown_method_lists_known():
    with pytest.raises(ConfigError) as e:
        load_config("frozen_synth", ["method.name=nosuch"])
    assert "frozen" in str(e.value)


def test_roundtrip_through_dict():
    cfg = load_config("frozen_synth")
    again = config_from_dict(to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)


def test_all_experiments_load():
    names = list_experiments()
    assert "frozen_synth" in names
    for n in names:
        load_config(n)


def test_env_data_root(monkeypatch):
    monkeypatch.setenv("VTP_DATA_ROOT", "/somewhere")
    assert load_config("frozen_synth").data.root == "/somewhere"


def test_experiment_encoder_section_replaces_the_default():
    """frozen's default text encoder has preset distilbert-base; frozen_synth names none and must get the
    packaged MiniLM, not a DistilBERT-base merged in from the default."""
    cfg = load_config("frozen_synth")
    assert "preset" not in cfg.method.text
    assert load_config("frozen_synth_paper").method.text.preset == "distilbert-base"
    assert load_config("frozen_synth", ["method.text.preset=tiny"]).method.text.preset == "tiny"


def test_saved_config_rebuilds_the_same_encoders():
    cfg = load_config("frozen_synth")
    assert to_dict(config_from_dict(to_dict(cfg)))["method"]["text"] == to_dict(cfg)["method"]["text"]
