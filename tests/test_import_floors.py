"""Which way imports run (docs/architecture.md, "Which way imports run"): every project import of
every module, read from its source, against the floors that module may import. An import that only
serves type hints (under ``if TYPE_CHECKING:``) does not count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("layers", "models", "losses", "dataloader", "trainer", "utils", "bin")
ENTRY_SCRIPTS = ("codec", "codecTrain", "codecTest", "codecStatistic", "demoFile", "demoStream")

# What each floor may import besides itself. A floor is a top-level package, or utils/<name> (a
# module or a subpackage of utils). Entry scripts and bin/ may import everything.
BASE = {"utils.errors", "utils.files"}
MAY_IMPORT: dict[str, set[str]] = {
    "utils": set(),  # the package's __init__
    "layers": set(),
    "models": {"layers"},
    "losses": {"layers"},
    "utils.errors": set(),
    "utils.install_requirements": set(),  # runs before anything is installed: the standard library only
    "utils.files": {"utils.errors"},
    "utils.audio": BASE,
    "utils.registry": BASE,
    "dataloader": {"utils.audio", *BASE},
    "utils.experiment_config": {"models", *BASE},  # (models/registry.py's type names)
    "utils.checkpoint": {"layers", "models", "utils.audio", "utils.experiment_config", *BASE},
    "utils.eval": {"layers", "models", "utils.audio", *BASE},
    "utils.runtime": {"layers", "models", *BASE},
    "utils.bitstream": BASE,
    "utils.audiodec": {"layers", "models", "utils.runtime", "utils.checkpoint", "utils.experiment_config",
                       "utils.registry", "utils.bitstream", "utils.audio", *BASE},  # fmt: skip
    "utils.cli": {"utils.audiodec", "utils.bitstream", "utils.runtime", "utils.audio", "utils.registry",
                  "utils.experiment_config", *BASE},  # fmt: skip
    "utils.batch": {"utils.audiodec", "utils.bitstream", "utils.runtime", "utils.audio", "utils.registry", "utils.cli",
                    *BASE},  # fmt: skip
    "utils.live": {"utils.audiodec", "utils.bitstream", "utils.runtime", "utils.audio", "utils.registry", "utils.cli",
                   *BASE},  # fmt: skip
    # Released models: fetched and checked by building them; its own command line runs through utils.cli.
    "utils.download": {"layers", "models", "utils.checkpoint", "utils.experiment_config", "utils.registry", "utils.cli",
                       *BASE},  # fmt: skip
    "trainer": {"layers", "models", "losses", "dataloader", "utils.checkpoint", "utils.experiment_config",
                "utils.eval", "utils.runtime", "utils.audio", *BASE},  # fmt: skip
}


def floor(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "utils" and len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def project_modules() -> list[Path]:
    files = [REPO / f"{name}.py" for name in ENTRY_SCRIPTS]
    for package in PACKAGES:
        files += sorted((REPO / package).rglob("*.py"))
    return files


def is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


class _Imports(ast.NodeVisitor):
    """The project modules a source imports, outside ``if TYPE_CHECKING:`` blocks."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
        if name == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(node.lineno, alias.name) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        for alias in node.names:  # `from utils import audio` imports the module utils.audio
            submodule = f"{node.module}.{alias.name}"
            self.found.append((node.lineno, submodule if is_module(submodule) else node.module))


def imports_of(path: Path) -> list[tuple[int, str]]:
    visitor = _Imports()
    visitor.visit(ast.parse(path.read_text(), str(path)))
    top = (*PACKAGES, *ENTRY_SCRIPTS)
    return [(line, name) for line, name in visitor.found if name.split(".")[0] in top]


def test_every_floor_imports_only_the_floors_below_it() -> None:
    wrong = []
    for path in project_modules():
        here = floor(module_name(path))
        if here in ENTRY_SCRIPTS or here == "bin":
            continue
        assert here in MAY_IMPORT, f"{path.relative_to(REPO)}: floor {here} is not in the table: add it"
        for line, name in imports_of(path):
            there = floor(name)
            if there != here and there not in MAY_IMPORT[here]:
                wrong.append(f"{path.relative_to(REPO)}:{line} ({here}) imports {name}")
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_an_entry_script() -> None:
    wrong = []
    for path in project_modules():
        here = floor(module_name(path))
        for line, name in imports_of(path):
            there = floor(name)
            if there in ENTRY_SCRIPTS or (there == "bin" and here != "bin"):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("source, expected", [
    ("from trainer.base import GANTrainer\nimport torch\n", ["trainer.base"]),
    ("from utils import audio\n", ["utils.audio"]),  # a submodule, not the package
    ("from utils.audio import read_mono\n", ["utils.audio"]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from utils.audiodec import X\n", []),
    ("def main():\n    from utils.cli import run_main\n", ["utils.cli"]),  # imports inside functions count
    ("from .sibling import x\n", []),  # relative imports stay within their floor
])  # fmt: skip
def test_the_reader_sees_what_a_module_imports(tmp_path: Path, source: str, expected: list[str]) -> None:
    path = tmp_path / "module.py"
    path.write_text(source)
    assert [name for _, name in imports_of(path)] == expected


def test_an_upward_import_is_out_of_its_floor() -> None:
    assert floor("trainer.base") not in MAY_IMPORT["layers"]
    assert floor("utils.audiodec.StreamingCodec") not in MAY_IMPORT["utils.runtime"]
    assert floor("utils.runtime.native_build") in MAY_IMPORT["trainer"]
