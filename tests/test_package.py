"""Tests for the distribution itself: lazy submodules, one version, metadata and requirements,
type hints, lint versions, warning filters."""

import ast
import functools
import importlib
import importlib.metadata
import inspect
import pathlib
import warnings

import pytest

import keras_tricks
from keras_tricks import _version

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_import_is_cheap_and_submodules_load_on_first_access(run_python):
    script = """
import sys
import keras_tricks
assert "keras" not in sys.modules and "tensorflow" not in sys.modules, "imported eagerly"
assert "keras_tricks.schedules" not in sys.modules
schedules = keras_tricks.schedules           # PEP 562 __getattr__
import keras_tricks.schedules as direct
assert schedules is direct and "schedules" in dir(keras_tricks)
print("OK")
"""
    assert "OK" in run_python(script, backend="tensorflow")


def test_every_public_module_is_reachable_and_unknown_names_raise():
    for name in ["augment", "data", "losses", "lr_finder", "models", "optimizers", "schedules"]:
        assert name in keras_tricks.__all__
        assert getattr(keras_tricks, name).__name__ == f"keras_tricks.{name}"
    assert "_checks" not in keras_tricks.__all__
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        keras_tricks.not_a_module  # noqa: B018


def _pyproject():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_the_version_is_written_once_and_packaging_reads_it():
    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "keras_tricks._version.__version__"
    # setuptools reads the attribute statically: it must be a plain string literal.
    module = ast.parse((ROOT / "keras_tricks" / "_version.py").read_text())
    (literal,) = [
        node.value.value
        for node in module.body
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__version__"]
    ]
    assert literal == _version.__version__ == keras_tricks.__version__
    assert not (ROOT / "setup.cfg").exists(), "the metadata lives in pyproject.toml only"
    try:
        installed = importlib.metadata.version("keras-tricks")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("keras-tricks is not installed")
    # An installed (editable) copy reports the same version once reinstalled after a bump.
    assert installed == _version.__version__


def test_both_packages_declare_inline_types_and_ship_the_marker():
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]
    for package in ("keras_tricks", "tfrecord_tools"):
        assert (ROOT / package / "py.typed").is_file()
        assert "py.typed" in package_data[package]  # PEP 561: the marker goes into the wheel


def test_the_console_scripts_point_at_callables():
    for name, target in _pyproject()["project"]["scripts"].items():
        module_name, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module_name), func)), name


# --- Every third-party import is declared --------------------------------------------------------
# A distribution our code imports must be a base requirement, unless the import sits behind a
# documented optional guard:
#   - `try: import X` / `except ImportError: raise ImportError("... pip install 'keras-tricks[E]'")`
#     (or a silent fallback) with X in the extra E;
#   - a module whose docstring says it needs the extra E ("the `plot` extra", "keras-tricks[plot]")
#     or the distribution ("needs `tensorflow-datasets`");
#   - a Keras backend branch (`if backend == "jax": import jax`): the user installed that backend;
#   - `if TYPE_CHECKING:` blocks, which never run.
# `make demo`'s `.[plot]`-only virtualenv once lacked tensorboard, which the recipes need through
# Keras's TensorBoard callback: the callbacks our code builds are checked the same way below.
PACKAGES = ("keras_tricks", "tfrecord_tools")
BACKEND_FRAMEWORKS = {"jax", "torch", "tensorflow"}
# Imports that are optional but not yet documented as such, in files whose owners are fixing them;
# each entry must still be a finding (test_no_stale_entries_in_the_optional_import_allowlist).
UNDOCUMENTED_OPTIONAL_IMPORTS_TO_FIX: set[tuple[str, str]] = set()


def _canonical(name):
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def _requirement_names(requirements):
    from packaging.requirements import Requirement

    return {_canonical(Requirement(r).name) for r in requirements}


@functools.cache
def _packages_distributions():
    return importlib.metadata.packages_distributions()


@functools.cache
def _distribution_of(dotted):
    """The installed distribution that provides the module `dotted` (None if none does)."""
    top = dotted.split(".")[0]
    candidates = _packages_distributions().get(top, [])
    if len(set(candidates)) <= 1:
        return _canonical(candidates[0]) if candidates else None
    # A namespace package (`google`): the distribution holding the longest prefix of the path.
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        stems = {"/".join(parts[:n]) + "/__init__.py", "/".join(parts[:n]) + ".py"}
        prefix = "/".join(parts[:n]) + "/"
        for dist in dict.fromkeys(candidates):
            files = importlib.metadata.distribution(dist).files or []
            if any(str(f) in stems or str(f).startswith(prefix) for f in files):
                if n > 1 or len(candidates) == 1:
                    return _canonical(dist)
    return None


def _handler_catches_import_error(handler):
    names = []
    for node in [handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts:
        if isinstance(node, ast.Name):
            names.append(node.id)
    return handler.type is None or bool({"ImportError", "ModuleNotFoundError"} & set(names))


def _import_sites(path):
    """(dotted module, guard) for every absolute import in `path`, at any depth.

    guard is None, ("try", handler message or None), ("backend", names compared) or "typing".
    """
    tree = ast.parse(path.read_text(), str(path))
    sites = []

    def visit(node, guard):
        if isinstance(node, ast.Try):
            catching = [h for h in node.handlers if _handler_catches_import_error(h)]
            if catching:
                message = " ".join(
                    c.value
                    for h in catching
                    for c in ast.walk(h)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                )
                for child in node.body:
                    visit(child, ("try", message))
                for child in node.handlers + node.orelse + node.finalbody:
                    visit(child, guard)
                return
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if test in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                return  # never runs
            if "backend" in test:
                compared = {
                    c.value
                    for c in ast.walk(node.test)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                }
                for child in node.body:
                    visit(child, ("backend", compared))
                for child in node.orelse:
                    visit(child, guard)
                return
        if isinstance(node, ast.Import):
            sites.extend((alias.name, guard) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            sites.append((node.module, guard))
        for child in ast.iter_child_nodes(node):
            visit(child, guard)

    visit(tree, None)
    return tree, sites


def _source_files():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _undeclared_imports(dependencies, extras):
    """(file, distribution, why) for each import that `dependencies` and `extras` do not cover."""
    import sys

    base = _requirement_names(dependencies)
    extra_names = {extra: _requirement_names(reqs) for extra, reqs in extras.items()}
    findings = set()
    for path in _source_files():
        rel = path.relative_to(ROOT).as_posix()
        tree, sites = _import_sites(path)
        docstring = ast.get_docstring(tree) or ""
        for dotted, guard in sites:
            top = dotted.split(".")[0]
            if top in sys.stdlib_module_names or top in PACKAGES or top == "__future__":
                continue
            if guard and guard[0] == "backend" and top in BACKEND_FRAMEWORKS and top in guard[1]:
                continue  # the Keras backend the user runs on, installed by the user
            dist = _distribution_of(dotted)
            if dist is None:
                findings.add((rel, dotted, "no installed distribution provides it"))
                continue
            if dist in base:
                continue
            in_extras = [e for e, names in extra_names.items() if dist in names]
            if not in_extras:
                findings.add((rel, dist, "in no requirement list of pyproject.toml"))
                continue
            if guard and guard[0] == "try":
                message = guard[1]
                if not message or any(f"[{e}]" in message for e in in_extras) or dist in message:
                    continue
                findings.add((rel, dist, "its ImportError names neither the extra nor it"))
                continue
            named = [f"`{e}` extra" for e in in_extras] + [f"[{e}]" for e in in_extras]
            if any(n in docstring for n in [*named, f"`{dist}`"]):
                continue  # the module says what it needs
            findings.add((rel, dist, f"optional ({', '.join(in_extras)}) without a guard"))
    return findings


def _keras_callbacks_built(tree):
    """Names X of every `keras.callbacks.X` our code refers to (or imports from keras.callbacks)."""
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and ast.unparse(node.value) == "keras.callbacks"
        ):
            names.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module == "keras.callbacks":
            names.update(alias.name for alias in node.names)
    return names


def _install_closure(requirements):
    """Canonical names of `requirements` and everything they install, from installed metadata."""
    from packaging.requirements import Requirement

    seen = set()
    todo = [(req.name, frozenset(req.extras)) for req in map(Requirement, requirements)]
    while todo:
        name, with_extras = todo.pop()
        key = (_canonical(name), with_extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            wanted = [""] + sorted(with_extras)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
                todo.append((req.name, frozenset(req.extras)))
    return {name for name, _ in seen}


def _callback_needs(callback_names):
    """(callback, distribution) pairs: what each Keras callback imports, at any depth, including
    the `tf.summary` functions it writes through (TF ships only shims that import tensorboard)."""
    import keras
    import tensorflow as tf

    needs = set()
    for name in sorted(callback_names):
        cls = getattr(keras.callbacks, name)
        modules = {inspect.getsourcefile(cls)}
        _, sites = _import_sites(pathlib.Path(inspect.getsourcefile(cls)))
        if any(dotted.startswith("tensorflow.summary") for dotted, _ in sites):
            modules.add(inspect.getsourcefile(tf.summary.scalar))
        for module in modules:
            for dotted, _ in _import_sites(pathlib.Path(module))[1]:
                dist = _distribution_of(dotted)
                if dist is not None:
                    needs.add((name, dist))
    return needs


def _missing_callback_needs(dependencies):
    built = set()
    for path in _source_files():
        built |= _keras_callbacks_built(ast.parse(path.read_text()))
    closure = _install_closure(dependencies)
    return {(cb, dist) for cb, dist in _callback_needs(built) if dist not in closure}


def test_every_third_party_import_is_a_requirement_or_behind_a_documented_guard():
    project = _pyproject()["project"]
    findings = _undeclared_imports(project["dependencies"], project["optional-dependencies"])
    findings = {f for f in findings if f[:2] not in UNDOCUMENTED_OPTIONAL_IMPORTS_TO_FIX}
    assert not findings, "\n".join(f"{f}: {d}: {why}" for f, d, why in sorted(findings))


def test_the_keras_callbacks_we_build_have_what_they_import_installed():
    dependencies = _pyproject()["project"]["dependencies"]
    missing = _missing_callback_needs(dependencies)
    assert not missing, f"add to [project].dependencies: {sorted(missing)}"


def test_the_requirement_checks_catch_a_missing_tensorboard_or_tqdm():
    # The checks must be able to fail: the requirement list minus tensorboard (make demo's failure)
    # or minus tqdm (imported by the writer and verifier) is caught.
    project = _pyproject()["project"]
    dependencies = project["dependencies"]
    without_tensorboard = [r for r in dependencies if not r.startswith("tensorboard")]
    assert len(without_tensorboard) == len(dependencies) - 1
    assert ("TensorBoard", "tensorboard") in _missing_callback_needs(without_tensorboard)
    without_tqdm = [r for r in dependencies if not r.startswith("tqdm")]
    findings = _undeclared_imports(without_tqdm, project["optional-dependencies"])
    assert ("tfrecord_tools/writer.py", "tqdm", "in no requirement list of pyproject.toml") in (
        findings
    )


def test_no_stale_entries_in_the_optional_import_allowlist():
    project = _pyproject()["project"]
    findings = _undeclared_imports(project["dependencies"], project["optional-dependencies"])
    stale = set(UNDOCUMENTED_OPTIONAL_IMPORTS_TO_FIX) - {f[:2] for f in findings}
    assert not stale, f"fixed: remove from UNDOCUMENTED_OPTIONAL_IMPORTS_TO_FIX: {sorted(stale)}"


# --- Type hints on every public function and class ------------------------------------------------
# Functions and methods (the constructor included) reachable from a public module's `__all__` (or
# its public names) carry annotations on every parameter and on the return (`__init__` may leave
# out `-> None`, as PEP 484 allows). Functions named here are not annotated yet; their modules'
# owners annotate them, and the list shrinks to empty (a fixed entry fails the stale test below).
NOT_YET_ANNOTATED: set[str] = set()


def _public_modules():
    import pkgutil

    names = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                names.append(info.name)
    return names


def _missing_annotations(func, qualname, bound):
    """`qualname: parameter p` / `qualname: return` for each annotation `func` lacks."""
    params = list(inspect.signature(func).parameters.values())[1 if bound else 0 :]
    missing = [f"{qualname}: parameter {p.name}" for p in params if p.annotation is p.empty]
    if "return" not in func.__annotations__ and func.__name__ != "__init__":
        missing.append(f"{qualname}: return")
    return missing


def _public_api_annotation_findings():
    findings = {}  # qualified name -> what it lacks
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None)
        if names is None:
            names = [n for n in vars(module) if not n.startswith("_")]
        for name in names:
            obj = getattr(module, name)
            owner = getattr(obj, "__module__", None) or ""
            if not owner.startswith(PACKAGES):
                continue  # re-exported from Keras, NumPy, ...
            members = []
            if inspect.isfunction(obj):
                members.append((obj, obj.__qualname__, False))
            elif inspect.isclass(obj):
                for attr, raw in vars(obj).items():
                    if attr.startswith("_") and attr not in ("__init__", "__call__"):
                        continue
                    qualname = f"{obj.__qualname__}.{attr}"
                    if isinstance(raw, property):
                        members.extend((f, qualname, True) for f in (raw.fget, raw.fset) if f)
                    elif isinstance(raw, staticmethod):
                        members.append((raw.__func__, qualname, False))
                    elif isinstance(raw, classmethod):
                        members.append((raw.__func__, qualname, True))
                    elif inspect.isfunction(raw):
                        members.append((raw, qualname, True))
            for func, qualname, bound in members:
                if func.__name__ == "<lambda>":
                    continue
                key = f"{owner}.{qualname}"
                lacks = _missing_annotations(func, key, bound)
                if lacks:
                    findings.setdefault(key, set()).update(lacks)
    return findings


@pytest.fixture(scope="module")
def annotation_findings():
    return _public_api_annotation_findings()


def test_every_public_function_and_method_is_fully_annotated(annotation_findings):
    unexpected = {k: v for k, v in annotation_findings.items() if k not in NOT_YET_ANNOTATED}
    assert not unexpected, "\n".join(sorted(m for lacks in unexpected.values() for m in lacks))


def test_no_stale_entries_in_the_annotation_allowlist(annotation_findings):
    stale = set(NOT_YET_ANNOTATED) - set(annotation_findings)  # set(): an emptied {} is a dict
    assert not stale, f"annotated now: remove from NOT_YET_ANNOTATED: {sorted(stale)}"


def test_the_annotation_check_sees_a_missing_hint():
    def documented(a: int, b, *args, c: str = "", **kwargs: int) -> None: ...

    class Layer:
        def __init__(self, x: int):
            self.x = x

        def call(self, inputs: int):
            return inputs

    assert _missing_annotations(documented, "f", False) == [
        "f: parameter b",
        "f: parameter args",
    ]
    assert _missing_annotations(Layer.__init__, "Layer.__init__", True) == []
    assert _missing_annotations(Layer.call, "Layer.call", True) == ["Layer.call: return"]


def test_pre_commit_runs_the_linter_versions_the_test_extra_pins():
    yaml = pytest.importorskip("yaml")
    from packaging.requirements import Requirement

    pins = {}
    for text in _pyproject()["project"]["optional-dependencies"]["test"]:
        req = Requirement(text)
        pins[_canonical(req.name)] = str(req.specifier)
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    revs = {repo["repo"].rsplit("/", 1)[-1]: repo["rev"] for repo in config["repos"]}
    assert revs["ruff-pre-commit"] == "v" + pins["ruff"].removeprefix("=="), pins["ruff"]
    assert revs["mirrors-mypy"] == "v" + pins["mypy"].removeprefix("=="), pins["mypy"]
    for tool in ("ruff", "mypy"):
        assert pins[tool].startswith("=="), f"pin {tool} exactly: the hook runs one version"
        assert importlib.metadata.version(tool) == pins[tool][2:], f"reinstall: {tool}"
    hooks = {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff-check", "ruff-format", "mypy"} <= hooks


# --- DeprecationWarnings are not hidden -----------------------------------------------------------
def _action_for(category, message, module):
    """What the active warning filters (pytest's, from pyproject.toml) do with such a warning."""
    for action, msg, cat, mod, lineno in warnings.filters:
        if (
            (msg is None or msg.match(message))
            and issubclass(category, cat)
            and (mod is None or mod.match(module))
            and lineno == 0
        ):
            return action
    return warnings.defaultaction


def test_deprecation_warnings_are_ignored_only_by_message_and_ours_are_errors():
    filters = _pyproject()["tool"]["pytest"]["ini_options"]["filterwarnings"]
    for entry in filters:
        action, message, category = (entry.split(":") + ["", ""])[:3]
        if action == "ignore":
            assert message, f"{entry!r} ignores a whole category"
    ours = ["keras_tricks.schedules", "keras_tricks.augment.mixing", "tfrecord_tools.writer"]
    for module in ours:
        assert _action_for(DeprecationWarning, "`x` is deprecated", module) == "error"
    # Someone else's deprecation is shown (in pytest's summary), not hidden.
    shown = _action_for(DeprecationWarning, "`x` is deprecated", "keras.src.ops")
    assert shown in ("always", "default"), shown
    # The one ignored, by its message (from NumPy 2, for TensorFlow's EagerTensor).
    array_copy = "__array__ implementation doesn't accept a copy keyword, so passing copy=False"
    assert _action_for(DeprecationWarning, array_copy, "keras.src.backend.tensorflow.core") == (
        "ignore"
    )
    with pytest.raises(DeprecationWarning, match="renamed"):
        warnings.warn_explicit(
            "`old` was renamed `new`", DeprecationWarning, "x.py", 1, "tfrecord_tools.cli"
        )
