"""How the package is put together: data sets registered once, imports that only look down."""

from __future__ import annotations

import ast
import typing
from importlib import import_module
from pathlib import Path

import spikegrad
from spikegrad.config import load_config
from spikegrad.data.configs import DATA_CONFIGS, DATA_SETS, DataConfig

PACKAGE = Path(spikegrad.__file__).parent


def module_imports() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports (at the top or inside a
    function: both are dependencies)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["spikegrad", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "spikegrad":
                    imported |= {f"spikegrad.{alias.name}" for alias in node.names}
                else:
                    imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        modules[".".join(parts)] = {m for m in imported if m.startswith("spikegrad.")}
    return modules


def test_every_data_set_is_registered_once_with_its_builder():
    names = [config.model_fields["name"].default for config in DATA_CONFIGS]
    assert len(set(names)) == len(names) and list(DATA_SETS) == names
    assert typing.get_args(typing.get_args(DataConfig)[0]) == DATA_CONFIGS
    for name, config_class in DATA_SETS.items():
        module, function = config_class.builder.split(":")
        assert callable(getattr(import_module(module), function)), name
        config = load_config({"data": {"name": name}}).data
        assert isinstance(config, config_class) and config.input_width() >= 1


def test_the_data_modules_import_no_cycle():
    modules = {m: {i for i in imports if i.startswith("spikegrad.data")}
               for m, imports in module_imports().items() if m.startswith("spikegrad.data")}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in modules.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    cycles = [m for m in modules if reaches(m, m, {m})]
    assert cycles == []


LAYERS = [
    ("maths", ["errors", "functional", "surrogates", "losses", "engine", "schema"]),
    ("config", ["config", "data.configs", "io"]),
    ("models", ["model", "diagnostics", "fluctuation"]),
    ("data", ["data"]),
    ("training", ["training", "run_files", "interop"]),
    ("studies", ["studies", "reproduce", "bench", "trial_profile"]),
    ("cli", ["cli", "__main__", ""]),
]
"""The layers, lowest first; a module belongs to the longest prefix that names it."""

KNOWN_UPWARD = {("spikegrad.surrogates", "spikegrad.config")}
"""Imports that still look up: a surrogate is checked as the config's surrogate section."""


def layer_of(module: str) -> int | None:
    best, length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            full = f"spikegrad.{prefix}" if prefix else "spikegrad"
            if (module == full or module.startswith(full + ".")) and len(full) > length:
                best, length = index, len(full)
    return best


def test_modules_import_only_their_own_layer_or_below():
    """maths -> config -> models -> data -> training -> studies -> command line: no module
    imports one above it (``spikegrad.x`` as a name of the package counts as module x)."""
    upward = []
    for module, imports in module_imports().items():
        here = layer_of(module)
        for target in imports:
            if target.startswith("spikegrad.__"):  # __version__
                continue
            there = layer_of(target)
            if there > here and (module, target) not in KNOWN_UPWARD:
                upward.append(f"{module} ({LAYERS[here][0]}) imports {target} "
                              f"({LAYERS[there][0]})")
    assert upward == []


def test_commands_that_train_nothing_start_without_torch():
    """Importing torch takes seconds: the command line and its ``--help``, a config read and
    checked, a study's driver (its workers train) and ``spikegrad config show`` do without
    it."""
    import subprocess
    import sys

    check = ("import sys, spikegrad, spikegrad.cli, spikegrad.studies.runner, spikegrad.data; "
             "from spikegrad.config import load_config; load_config('randman'); "
             "from spikegrad.cli import main\n"
             "for words in (['--help'], ['config', 'show', 'randman']):\n"
             "    try: main(words)\n"
             "    except SystemExit: pass\n"
             "print('torch' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          check=True)
    assert done.stderr.strip().splitlines()[-1] == "False"


def test_the_bench_command_names_the_benchmarks_cases_and_libraries():
    from spikegrad import bench
    from spikegrad.cli import bench as command

    assert command.CASES == tuple(bench.CASES) and command.LIBRARIES == bench.LIBRARIES


def test_the_package_names_its_public_api_and_imports_each_on_first_use():
    import subprocess
    import sys

    assert sorted(spikegrad.__all__) == sorted(spikegrad._HOME)
    for name in spikegrad.__all__:
        assert getattr(spikegrad, name) is getattr(import_module(spikegrad._HOME[name]), name)
    assert set(spikegrad.__all__) <= set(dir(spikegrad))
    # a submodule by attribute, as when the package imported them all, in a fresh interpreter
    check = ("import spikegrad\n"
             "print(spikegrad.model.SNN.__name__, spikegrad.training.Trainer.__name__,\n"
             "      hasattr(spikegrad, 'no_such_module'))")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["SNN", "Trainer", "False"]


def test_the_command_line_starts_without_the_report_libraries():
    """scipy and matplotlib serve the report only: the command line (and every study worker
    it spawns, which imports it again) starts without them."""
    import subprocess
    import sys

    check = ("import sys, spikegrad.cli; "
             "print(sorted({'scipy', 'matplotlib'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
