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


@pytest.mark.parametrize("key, bad, choices", [
    ("loss.gather", "allgather", "global, none"),
    ("data.mix", "zip", "round_robin, proportional"),
    ("optim.scheduler", "linear", "constant, cosine, step"),
    ("optim.name", "sgd", "adamw, adam"),
    ("data.train_sampling", "random", "uniform, rand"),
    ("data.eval_sampling", "middle", "uniform, rand"),
    ("init.temporal_fix", "nearest", "zeros, interp, bilinear"),
    ("init.source", "timm", "frozen"),
])
def test_choice_keys_are_checked_when_the_config_loads(key, bad, choices):
    """Refused by load_config (before any data or model is touched), naming the key and the choices."""
    with pytest.raises(ConfigError) as e:
        load_config("frozen_synth", [f"{key}={bad}"])
    msg = str(e.value)
    assert f"'{key}'" in msg and repr(bad) in msg and choices in msg


def test_choice_keys_are_checked_in_saved_configs_and_eval_overrides():
    from vtp_bench.config import apply_overrides, config_from_dict

    d = to_dict(load_config("frozen_synth"))
    d["loss"]["gather"] = "bogus"
    with pytest.raises(ConfigError, match="'loss.gather'"):
        config_from_dict(d)
    with pytest.raises(ConfigError, match="'data.eval_sampling'"):
        apply_overrides(load_config("frozen_synth"), ["data.eval_sampling=bogus"])


def test_step_scheduler_needs_milestones():
    with pytest.raises(ConfigError, match="optim.milestones"):
        load_config("frozen_synth", ["optim.scheduler=step"])
    cfg = load_config("frozen_synth", ["optim.scheduler=step", "optim.milestones=[10,20]", "optim.gamma=0.5"])
    assert list(cfg.optim.milestones) == [10, 20]


def test_a_method_config_choice_is_checked(monkeypatch):
    """A method's own ``choice`` fields are checked the same way (here a throw-away method registered for the test)."""
    from dataclasses import dataclass

    from vtp_bench.config import choice
    from vtp_bench.methods.frozen import Frozen, FrozenConfig
    from vtp_bench.registry import METHODS

    @dataclass
    class PickyConfig(FrozenConfig):
        name: str = "picky_test"
        pool: str = choice("cls", ("cls", "mean"))

    class Picky(Frozen):
        Config = PickyConfig

    monkeypatch.setitem(METHODS._entries, "picky_test", Picky)
    assert load_config("frozen_synth", ["method.name=picky_test", "method.pool=mean"]).method.pool == "mean"
    with pytest.raises(ConfigError, match=r"'method.pool': 'max'; choose one of: cls, mean"):
        load_config("frozen_synth", ["method.name=picky_test", "method.pool=max"])


@pytest.mark.parametrize("override", ["trainer.max_steps=abc", "data.batch_size=-4", "data.batch_size=0",
                                      "data.num_frames=0", "data.num_frames=-2", "data.img_size=0", "optim.lr=-1",
                                      "optim.lr=nan", "trainer.max_steps=-5", "trainer.max_steps=0",
                                      "trainer.limit_val_batches=1", "trainer.limit_val_batches=0.5", "seed=-5",
                                      "data.train=[]", "optim.betas=[0.9]", "optim.eps=0", "optim.gamma=nan",
                                      "eval.retrieval.rerank_temperature=0", "eval.grounding.clip_seconds=0",
                                      "eval.zeroshot_cls.prompt_template=no_placeholder",
                                      "trainer.enable_progress_bar=maybe", "eval.val_task=nope",
                                      "data.crop_scale=[2,1]", "run.ckpt_every_n_steps=0", "data.max_val_videos=0",
                                      "eval.grounding.max_clips=0", "run.version=../escape"])
def test_values_no_run_can_use_are_refused_before_a_run_dir(override, tmp_path, capsys):
    from vtp_bench.cli import main

    assert main(["train", "frozen_synth", override, f"run.dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert f"bad value for config key '{override.split('=')[0]}'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_name_that_yaml_reads_as_a_boolean_is_refused_not_turned_into_False(tmp_path, capsys):
    from vtp_bench.cli import main

    assert main(["train", "frozen_synth", "run.version=off", f"run.dir={tmp_path / 'runs'}"]) == 2
    assert "reads as the boolean False" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    assert load_config("frozen_synth", ["run.version='off'"]).run.version == "off"


@pytest.mark.parametrize("override", ["trainer.devices=0", "trainer.accelerator=gpu", "trainer.precision=bogus"])
def test_trainer_settings_lightning_refuses_are_a_sentence_before_a_run_dir(override, tmp_path, capsys):
    from vtp_bench.cli import main

    assert main(["train", "frozen_synth", override, f"run.dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert "Lightning cannot run with these settings" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_broken_experiment_file_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("method: [a\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML: .*line 2"):
        load_config(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="a mapping of config sections"):
        load_config(str(tmp_path / "list.yaml"))


def test_the_config_schema_imports_no_torch_and_its_choices_match_the_code():
    """``choice`` sets live in ``vtp_bench.choices`` (no torch, no PyAV): the modules acting on them agree."""
    import subprocess
    import sys

    code = "import sys, vtp_bench.config; print('torch' in sys.modules or 'av' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    # a method's module (and every task's) loads no decoder, checkpoint reader, optimizer or trainer
    heavy = ("av", "vtp_bench.data.video", "vtp_bench.models.checkpoints", "vtp_bench.optim", "lightning")
    code = ("import sys; from vtp_bench.registry import METHODS, TASKS; METHODS.names(); TASKS.names(); "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    from vtp_bench.choices import OPTIMIZER_NAMES
    from vtp_bench.optim import OPTIMIZERS

    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES


def test_a_task_option_lives_in_its_section_and_an_earlier_flat_key_is_moved_there(capsys):
    """``eval.<task>`` is typed by the task's ``Config``; ``eval.v2t`` (one flat section, earlier versions) is read
    as ``eval.retrieval.v2t`` with a note, and a saved config holding it loads unchanged (old checkpoints)."""
    cfg = load_config("frozen_synth", ["eval.v2t=group", "eval.grounding_clip_seconds=2.5"])
    assert cfg.eval.retrieval.v2t == "group" and cfg.eval.grounding.clip_seconds == 2.5
    assert "eval.v2t (command line) is now eval.retrieval.v2t" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"'eval.retrieval.v2t': 'sideways'; choose one of: caption, group"):
        load_config("frozen_synth", ["eval.retrieval.v2t=sideways"])
    saved = to_dict(load_config("frozen_synth"))
    flat = dict(saved, eval={"split": "test", "protocol": "xpool", "grounding_score": "mean"})
    again = config_from_dict(flat)
    assert again.eval.retrieval.protocol == "xpool" and again.eval.grounding.score == "mean"
    assert "now eval" not in capsys.readouterr().err  # a saved config is read quietly


def test_an_earlier_key_and_its_new_name_together_are_refused_and_overrides_move_too(capsys):
    from vtp_bench.config import apply_overrides

    with pytest.raises(ConfigError, match=r"eval.v2t and eval.retrieval.v2t are both given \(command line\)"):
        load_config("frozen_synth", ["eval.v2t=group", "eval.retrieval.v2t=caption"])
    cfg = apply_overrides(load_config("frozen_synth"), ["eval.v2t=group"])  # as `eval --ckpt ... eval.v2t=group`
    assert cfg.eval.retrieval.v2t == "group"
    saved = to_dict(load_config("frozen_synth"))
    del saved["eval"]["retrieval"]["v2t"]
    saved["eval"]["v2t"] = "group"  # a checkpoint of an earlier version
    nested = dict(saved["eval"]["retrieval"])
    assert config_from_dict(saved).eval.retrieval.v2t == "group"
    assert saved["eval"]["v2t"] == "group" and saved["eval"]["retrieval"] == nested  # the caller's dict unchanged


def test_a_saved_config_with_a_plugin_tasks_section_loads_without_the_plugin(capsys):
    saved = to_dict(load_config("frozen_synth"))
    saved["eval"]["two_choice"] = {"mode": "a"}  # written while a plugin task was registered
    cfg = config_from_dict(saved)
    assert "two_choice" not in cfg.eval and "set VTP_PLUGINS to use them" in capsys.readouterr().err


def test_a_task_flag_of_another_task_is_refused(tmp_path, capsys):
    from vtp_bench.cli import main

    assert main(["eval", "--ckpt", str(tmp_path / "x.ckpt"), "--dataset", "synth", "--task", "grounding",
                 "--v2t", "group"]) == 2
    assert "--v2t is an option of --task retrieval; --task grounding does not read it" in capsys.readouterr().err
