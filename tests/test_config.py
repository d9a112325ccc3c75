import pytest

from spikegrad.config import ConfigError, builtin_config_names, load_config


def test_builtin_randman_is_the_paper_setting():
    config = load_config("randman")
    assert "randman" in builtin_config_names()
    assert (config.data.n_classes, config.data.n_units, config.data.manifold_dim) == (10, 20, 1)
    assert config.data.alpha == 1.0 and config.model.hidden[0].size == 100
    assert config.time.n_steps == 100 and config.data.step_frac == 0.5


def test_overrides_with_list_index_and_yaml_values():
    config = load_config("randman", ["model.hidden.0.size=7", "model.hidden.0.recurrent=true",
                                     "surrogate.slope=1e2", "seed=5"])
    assert config.model.hidden[0].size == 7 and config.model.hidden[0].recurrent
    assert config.surrogate.slope == 100.0 and config.seed == 5


def test_round_trip_and_hash(tmp_path):
    config = load_config("randman")
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    again = load_config(path)
    assert again == config and again.config_hash() == config.config_hash()
    assert load_config("randman", ["seed=1"]).config_hash() != config.config_hash()


@pytest.mark.parametrize(
    "override, message",
    [
        (["model.hidden.0.size=0"], "model.hidden.0.size: Input should be greater than"),
        (["surrogate.name=nope"], "surrogate.name: unknown surrogate 'nope'"),
        (["model.hidden.0.tau_mem_ms=1"], "model.hidden.0.tau_mem_ms: must be greater than"),
        (["time.dt_ms=30"], "must be greater than time.dt_ms"),
        (["training.bogus=1"], "training.bogus: unknown key"),
        (["training.epochs=many"], "training.epochs: Input should be a valid integer"),
        (["data.alpha=-1"], "data.alpha: Input should be greater than 0"),
        (["model.hidden.3.size=1"], "model.hidden.3: no list entry"),
        (["model.readout.reduction=median"], "model.readout.reduction: Input should be"),
        (["noequals"], "expected key=value"),
    ],
)
def test_bad_configs_name_the_field(override, message):
    with pytest.raises(ConfigError) as info:
        load_config("randman", override)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="data: required field is missing"):
        load_config(empty)


def test_config_reference_is_complete_and_is_docs_config_md():
    from pathlib import Path

    from spikegrad.config import config_reference

    text = config_reference()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) > 60
    assert all(not line.rstrip().endswith("| |") for line in rows), "a field has no meaning"
    for path in ("surrogate.slope", "model.readout.initial_membrane", "data.spectrum_offset",
                 "training.patience", "model.init.recurrent.scheme"):
        assert f"| `{path}` |" in text
    docs = Path(__file__).parents[1] / "docs" / "config.md"
    assert docs.read_text() == text, "regenerate: spikegrad config reference > docs/config.md"


def test_kernels_and_recompute_are_config_fields_hashed_only_when_set():
    import hashlib
    import json

    config = load_config("randman")
    assert (config.model.kernels, config.model.recompute) == ("auto", "auto")
    # at their defaults they are left out of the hash: runs identified before they existed
    # keep their hashes
    values = config.to_dict()
    del values["model"]["kernels"], values["model"]["recompute"]
    del values["model"]["init"]["fluctuation"]  # the same for the fluctuation init's targets
    for layer in values["model"]["hidden"]:  # and for Dale's law, off
        del layer["dale"]
    del values["model"]["time_constants"]  # and for per-neuron time constants
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    assert config.config_hash() == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert load_config("randman", ["model.kernels=torch"]).config_hash() != config.config_hash()
    for recompute in ("true", "false"):
        assert (load_config("randman", [f"model.recompute={recompute}"]).config_hash()
                != config.config_hash())
    with pytest.raises(ConfigError, match="model.kernels: Input should be 'auto', 'cpp' or"):
        load_config("randman", ["model.kernels=gpu"])
    with pytest.raises(ConfigError, match=r"^model.recompute: expected true, false or auto "
                                          r"\(got 'sometimes'\)$"):
        load_config("randman", ["model.recompute=sometimes"])


def test_config_reference_shows_each_data_sets_own_defaults():
    """Every data field's default in the reference is the value a data section without it
    gets (a section whose default differs from its class's, as the digits' split, once showed
    its class's)."""
    import json
    import re

    from spikegrad.config import config_reference
    from spikegrad.data.configs import DATA_CONFIGS

    text = config_reference()
    for model in DATA_CONFIGS:
        name = model.model_fields["name"].default
        section = text.split(f"### `{name}`")[1].split("\n### ")[0]
        instance = model.model_validate({"name": name}) if _constructible(model, name) else None
        if instance is None:
            continue
        dumped = instance.model_dump(mode="json")
        for path, shown in re.findall(r"^\| `data\.([\w.]+)` \| `([^`]*)` \|", section, re.M):
            value = dumped
            for part in path.split("."):
                value = value[part] if isinstance(value, dict) else None
            if shown != "—" and value is not None:
                assert json.loads(shown) == value, (name, path)


def _constructible(model, name) -> bool:
    try:
        model.model_validate({"name": name})
    except Exception:  # noqa: BLE001 - a data set with required fields
        return False
    return True


def test_setting_one_digits_split_fraction_keeps_the_others():
    config = load_config("digits", {"data.split.train": 0.6})
    assert (config.data.split.valid, config.data.split.test) == (0.2, 0.2)
    with pytest.raises(ConfigError, match="data.split: train \\+ valid \\+ test must be 1"):
        load_config("digits", {"data.split.train": 0.7})


def test_overrides_given_as_one_text_are_refused():
    with pytest.raises(ConfigError, match="overrides: expected a list of key=value texts"):
        load_config("randman", "training.epochs=3")
