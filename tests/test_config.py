import pytest

from greenlib import config


@pytest.mark.parametrize("profile", config.PROFILES)
@pytest.mark.parametrize("section", list(config.SECTIONS))
def test_every_profile_gives_valid_values_for_every_section(profile, section):
    cfg = config.resolve(section, profile=profile)
    assert set(cfg) == set(config.SECTIONS[section]) | {"profile"}
    for name, value in cfg.items():
        if name != "profile":
            assert config.check_value(section, name, value) == value


def test_none_takes_the_profile_value_and_overrides_win():
    cfg = config.resolve("baselines", profile="quick", epochs=None, batch_size=32)
    assert cfg.epochs == config.PROFILE_VALUES["quick"]["baselines"]["epochs"]
    assert cfg.batch_size == 32 and cfg.profile == "quick"


def test_int_widens_to_float_and_tuple_to_list():
    cfg = config.resolve("baselines", lr=1, models=("vgg16",))
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.models == ["vgg16"]


@pytest.mark.parametrize("kwargs, words", [
    ({"profile": "fast"}, ["'fast'", "smoke, quick, paper"]),
    ({"epochs": 0}, ["epochs=0", ">= 1"]),
    ({"epochs": 2.5}, ["epochs=2.5", "expected int"]),
    ({"epochs": True}, ["epochs=True", "expected int"]),
    ({"models": ["vgg99"]}, ["'vgg99'", "vgg16"]),
    ({"models": []}, ["empty"]),
    ({"dataset": "imagenet"}, ["'imagenet'", "synthetic, cifar100"]),
    ({"sampling_interval_s": 0.0}, ["sampling_interval_s=0.0", "> 0"]),
    ({"lr": float("nan")}, ["NaN"]),
    ({"nonsense": 1}, ["unknown parameter 'nonsense'", "epochs"]),
])
def test_bad_values_fail_with_one_line_naming_them(kwargs, words):
    with pytest.raises(config.ConfigError) as e:
        config.resolve("baselines", **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_resolved_is_read_only():
    cfg = config.resolve("baselines")
    with pytest.raises(TypeError):
        cfg["epochs"] = 3
    with pytest.raises(AttributeError, match="no parameter 'nope'"):
        cfg.nope


def test_zoo_names_match_the_model_registry():
    from greenlib.models import MODELS

    assert set(MODELS) == set(config.ZOO_NAMES)
