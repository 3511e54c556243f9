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
