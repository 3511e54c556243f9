import pytest

from vtp_bench.registry import DATASETS, ENCODERS, METHODS, Registry, RegistryError


def test_duplicate_name_refused():
    reg = Registry("thing")

    @reg.register("a")
    class A:
        pass

    with pytest.raises(RegistryError, match="already registered"):

        @reg.register("a")
        class B:
            pass


def test_unknown_name_lists_known():
    reg = Registry("thing")
    reg.register("alpha")(dict)
    reg.register("beta")(list)
    with pytest.raises(RegistryError) as e:
        reg.get("gamma")
    assert "unknown thing 'gamma'" in str(e.value)
    assert "alpha, beta" in str(e.value)


def test_builtin_entries_registered():
    assert "frozen" in METHODS.names()
    assert {"space_time_vit", "hf_text"} <= set(ENCODERS.names())
    assert "synth" in DATASETS.names()


def test_a_plugin_that_fails_to_import_is_named_in_one_line(tmp_path, monkeypatch):
    from vtp_bench import registry

    bad = tmp_path / "broken_plugin.py"
    bad.write_text("import math\n\nx = math.sqrt(-1)\n")
    monkeypatch.setenv("VTP_PLUGINS", str(bad))
    monkeypatch.setattr(registry, "_PLUGINS_LOADED", set())
    with pytest.raises(RegistryError, match=r"importing .*broken_plugin.py failed at .*broken_plugin.py:3: "
                                            r"ValueError: math domain error"):
        registry.load_plugins()
    monkeypatch.setenv("VTP_PLUGINS", str(tmp_path / "absent.py"))
    with pytest.raises(RegistryError, match="absent.py, which does not exist"):
        registry.load_plugins()
