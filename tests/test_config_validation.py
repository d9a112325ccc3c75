"""What a config file may hold: finite numbers, numbers that are not booleans, each key once,
text; and which file a name means."""

from __future__ import annotations

import math

import pytest

from spikegrad.config import (
    ConfigError,
    builtin_config_names,
    get_path,
    load_config,
    read_config_source,
)
from spikegrad.model import SNN
from spikegrad.studies.spec import load_study_spec
from spikegrad.surrogates import Surrogate


def leaves(tree, prefix=""):
    """(dotted path, value) of every leaf of a config dict."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, dict | list) and value:
            yield from leaves(value, path + ".")
        else:
            yield path, value


def numeric_leaves(kind):
    for name in builtin_config_names():
        for path, value in leaves(load_config(name).to_dict()):
            if isinstance(value, kind) and not isinstance(value, bool):
                yield name, path


@pytest.mark.parametrize("bad", [".nan", ".inf", "-.inf", "nan"])
def test_every_float_field_refuses_non_finite_values(bad):
    paths = list(numeric_leaves(float))
    assert len(paths) > 50  # every built-in config's time constants, rates, slopes, ...
    for name, path in paths:
        with pytest.raises(ConfigError) as error:
            load_config(name, [f"{path}={bad}"])
        message = str(error.value)
        assert message.startswith(f"{path}: ") and "finite" in message, (name, message)


def test_every_integer_field_refuses_booleans():
    paths = list(numeric_leaves(int))
    assert any(path == "seed" for _, path in paths) and len(paths) > 20
    for name, path in paths:
        for value in ("true", "false"):
            with pytest.raises(ConfigError) as error:
                load_config(name, [f"{path}={value}"])
            assert str(error.value).startswith(f"{path}: must be a number, not {value}"), \
                (name, str(error.value))


@pytest.mark.parametrize("override, message", [
    ("seed=-1", "seed: Input should be greater than or equal to 0 (got -1)"),
    (f"seed={2**64}", "seed: Input should be less than"),
    ("training.learning_rate=true", "training.learning_rate: must be a number, not true"),
    ("surrogate.slope=.inf", "surrogate.slope: Input should be a finite number (got inf)"),
])
def test_numbers_the_network_cannot_use(override, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        load_config("randman", [override])


def test_non_finite_study_ranges_are_refused():
    spec = {"name": "s", "base": "randman", "axes": {"training.learning_rate":
                                                     {"log": [1e-3, float("inf")], "num": 3}}}
    with pytest.raises(ConfigError, match="finite"):
        load_study_spec(spec)
    spec["axes"] = {"training.learning_rate": [1e-3, float("nan")]}
    with pytest.raises(ConfigError, match="training.learning_rate: Input should be a finite"):
        load_study_spec(spec)


def test_duplicate_keys_are_an_error_naming_file_key_and_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: a\ndata:\n  name: randman\n  seed: 1\ntraining:\n  epochs: 3\n"
                    "data:\n  name: digits\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: invalid YAML: duplicate key 'data' (line 7, column 1)"
    path.write_text("data:\n  name: randman\n  seed: 1\n  seed: 2\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'seed' \(line 4, column 3\)"):
        load_config(path)


def test_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("layer: &layer {size: 10, recurrent: true}\n")
    raw = read_config_source(path)
    assert raw["layer"] == {"size": 10, "recurrent": True}
    path.write_text("base: &b {size: 10}\nmodel:\n  hidden:\n    - <<: *b\n      size: 20\n"
                    "data: {name: randman}\n")
    config = load_config({k: v for k, v in read_config_source(path).items() if k != "base"})
    assert config.model.hidden[0].size == 20


def test_duplicate_keys_in_a_study_spec_and_in_set_values(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("name: s\nbase: randman\nseeds: [0]\nseeds: [1]\n")
    with pytest.raises(ConfigError, match=r"study.yaml: invalid YAML: duplicate key 'seeds'"):
        load_study_spec(path)
    with pytest.raises(ConfigError, match=r"override .*duplicate key 'a'"):
        load_config("randman", ["data={a: 1, a: 2}"])


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
                                     b"name: a\n\xff\xfe\n", bytes(range(256))])
def test_binary_config_file_error_names_the_file(tmp_path, content):
    path = tmp_path / "picture.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ")
    assert "\n" not in str(error.value)


def test_a_folder_named_like_a_built_in_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shd").mkdir()
    (tmp_path / "randman-smoke").mkdir()
    assert load_config("shd").data.name == "shd"
    assert load_study_spec("randman-smoke").name == "randman-smoke"


def test_a_folder_is_never_a_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("runs", "runs.yaml"):
        (tmp_path / name).mkdir()
        with pytest.raises(ConfigError, match=f"^{name}: is a folder, not a config file$"):
            load_config(name)
        with pytest.raises(ConfigError, match=f"^{name}: is a folder, not a study spec file$"):
            load_study_spec(name)


def test_a_file_named_like_a_built_in_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shd").write_text("name: mine\ndata: {name: randman}\n")
    assert load_config("shd").name == "mine"


def test_finite_values_still_load():
    config = load_config("randman", ["training.learning_rate=1e-3", "seed=7",
                                     "model.readout.initial_membrane=-0.5"])
    assert math.isfinite(get_path(config.to_dict(), "training.learning_rate"))
    assert config.seed == 7


def config_message(*overrides):
    with pytest.raises(ConfigError) as error:
        load_config("randman", list(overrides))
    return str(error.value)


def api_message(call):
    with pytest.raises(ConfigError) as error:
        call()
    return str(error.value)


@pytest.mark.parametrize("call, overrides", [
    (lambda: SNN.build(20, [100], 10, tau_mem_ms=0.5), ["model.hidden.0.tau_mem_ms=0.5"]),
    (lambda: SNN.build(20, [100], 10, tau_syn_ms=1.0), ["model.hidden.0.tau_syn_ms=1.0"]),
    (lambda: SNN.build(20, [100], 10, dt_ms=2.0, tau_out_ms=2.0),
     ["time.dt_ms=2.0", "model.readout.tau_mem_ms=2.0"]),
    (lambda: SNN.build(20, [0], 10), ["model.hidden.0.size=0"]),
    (lambda: SNN.build(20, [10, 0], 10), ["model.hidden=[{size: 10}, {size: 0}]"]),
    (lambda: SNN.build(20, [], 10), ["model.hidden=[]"]),
    (lambda: SNN.build(20, [10], 3, dt_ms=math.nan), ["time.dt_ms=.nan"]),
    (lambda: SNN.build(20, [10], 3, init_scale=-1.0), ["model.init.feedforward.scale=-1.0"]),
    (lambda: SNN.build(20, [10], 3, engine="gpu"), ["model.engine=gpu"]),
    (lambda: SNN.build(20, [10], 3).set_engine("gpu"), ["model.engine=gpu"]),
    (lambda: Surrogate("superspike", slope=-1.0), ["surrogate.slope=-1.0"]),
    (lambda: Surrogate("superspike", scale=math.inf), ["surrogate.scale=.inf"]),
    (lambda: Surrogate("wiggle"), ["surrogate.name=wiggle"]),
])
def test_python_api_checks_what_the_config_checks_with_the_same_message(call, overrides):
    assert api_message(call) == config_message(*overrides)


def test_python_api_sizes_without_a_config_field():
    assert api_message(lambda: SNN.build(0, [10], 3)) == \
        "n_inputs: Input should be greater than or equal to 1 (got 0)"
    assert api_message(lambda: SNN.build(5, [10], 3, recurrent=[True, False])) == \
        "recurrent: one flag per hidden layer (1), got 2"


@pytest.mark.parametrize("override, message", [
    ("model.time_constants.gamma_shape=0",
     "model.time_constants.gamma_shape: Input should be greater than 0 (got 0)"),
    ("model.time_constants.distribution=lognormal",
     "model.time_constants.distribution: Input should be 'homogeneous' or 'gamma' "
     "(got 'lognormal')"),
    ("model.time_constants.learn=3", "model.time_constants.learn: Input should be a valid "
     "boolean"),
])
def test_time_constant_settings_are_checked(override, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        load_config("randman", [override])
