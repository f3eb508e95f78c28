"""The feature manifest: exactly which features a model was trained on, and the code that made them.

Saved with every model and rebuilt at scoring time; ``check_compatible`` refuses to score when the
two differ (feature set, order, dtypes, category levels, config or feature code), because a model
fed differently computed features fails silently with plausible-looking numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

import pandas as pd

from features import atomic
from features.build import feature_family_of, select_families
from features.config import FeatureConfig

# Modules every feature goes through, besides the family modules themselves.
CORE_MODULES = ("features.build", "features.catalog", "features.config", "features.tables")
# Columns a training set carries next to its features.
NON_FEATURE_COLUMNS = ("cutoff", "label")


class FeatureSkewError(ValueError):
    """The features offered to a model are not the ones it was trained on."""


def _sha256_json(value) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class FeatureManifest:
    features: tuple[str, ...]
    families: dict[str, str]  # feature -> family that computes it
    dtypes: dict[str, str]  # feature -> "float64" | "category"
    categories: dict[str, tuple]  # categorical feature -> its levels, in code order
    config: dict  # FeatureConfig.to_dict()
    code_hash: str
    config_hash: str
    manifest_hash: str = field(default="")

    def __post_init__(self):
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(
            self, "categories", {k: tuple(v) for k, v in self.categories.items()}
        )
        expected = _sha256_json(self._content())
        if not self.manifest_hash:
            object.__setattr__(self, "manifest_hash", expected)
        elif self.manifest_hash != expected:
            raise ValueError("feature manifest is corrupt: its manifest_hash does not match it")

    def _content(self) -> dict:
        d = asdict(self)
        d.pop("manifest_hash")
        d["features"] = list(self.features)
        d["categories"] = {k: list(v) for k, v in self.categories.items()}
        return d

    def to_json(self) -> str:
        """Stable, human-readable JSON (sorted keys) including manifest_hash."""
        return json.dumps({**self._content(), "manifest_hash": self.manifest_hash},
                          sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> FeatureManifest:
        """Parse to_json output; raises ValueError if the content no longer matches its hash."""
        return cls(**json.loads(text))

    def save(self, path: str | os.PathLike) -> Path:
        """Publish the manifest whole (features.atomic)."""
        return atomic.write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureManifest:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def conform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The manifest's features of ``frame``, in its order and dtypes.

        Categorical columns get exactly the recorded levels (a level unseen in training becomes
        NaN), so category codes mean the same thing to the model as during training.
        """
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise FeatureSkewError(f"features missing from the frame: {missing}")
        out = {}
        for name in self.features:
            if self.dtypes[name] == "category":
                levels = list(self.categories[name])
                values = frame[name]
                if not isinstance(values.dtype, pd.CategoricalDtype):
                    values = values.where(values.isin(levels)).astype("category")
                out[name] = values.cat.set_categories(levels)
            else:
                out[name] = frame[name].astype(self.dtypes[name])
        return pd.DataFrame(out, index=frame.index)


def manifest_for(frame: pd.DataFrame, config: FeatureConfig, families=None) -> FeatureManifest:
    """The manifest of a build_features (or build_training_set) frame made with ``families``.

    ``cutoff`` and ``label`` columns are not features and are left out.
    """
    chosen = select_families(families)
    names = [c for c in frame.columns if c not in NON_FEATURE_COLUMNS]
    dtypes, categories = {}, {}
    for name in names:
        dtype = frame[name].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            dtypes[name] = "category"
            categories[name] = tuple(_plain(v) for v in dtype.categories)
        else:
            dtypes[name] = str(dtype)
    config_dict = config.to_dict()
    return FeatureManifest(
        features=tuple(names),
        families={name: feature_family_of(name, chosen) for name in names},
        dtypes=dtypes,
        categories=categories,
        config=config_dict,
        code_hash=code_hash(chosen),
        config_hash=_sha256_json(config_dict),
    )


def check_compatible(expected: FeatureManifest, actual: FeatureManifest) -> None:
    """Raise FeatureSkewError naming every difference that would change what the model sees."""
    problems = []
    if expected.code_hash != actual.code_hash:
        problems.append(
            f"feature code differs (code_hash {expected.code_hash[:12]} != {actual.code_hash[:12]})"
        )
    if expected.config != actual.config:
        keys = sorted(set(expected.config) | set(actual.config))
        changed = [
            f"{k}: {expected.config.get(k)!r} -> {actual.config.get(k)!r}"
            for k in keys
            if expected.config.get(k) != actual.config.get(k)
        ]
        problems.append("feature config differs (" + "; ".join(changed) + ")")
    missing = [f for f in expected.features if f not in actual.features]
    extra = [f for f in actual.features if f not in expected.features]
    if missing:
        problems.append(f"missing features: {missing}")
    if extra:
        problems.append(f"extra features: {extra}")
    if not missing and not extra and expected.features != actual.features:
        problems.append("features are in a different order")
    for name in expected.features:
        if name not in actual.features:
            continue
        if expected.dtypes[name] != actual.dtypes[name]:
            problems.append(f"{name}: dtype {expected.dtypes[name]} -> {actual.dtypes[name]}")
        elif expected.categories.get(name) != actual.categories.get(name):
            before = set(expected.categories.get(name, ()))
            after = set(actual.categories.get(name, ()))
            problems.append(
                f"{name}: category levels differ (new {sorted(map(str, after - before))}, "
                f"gone {sorted(map(str, before - after))}, or reordered)"
            )
        if expected.families.get(name) != actual.families.get(name):
            problems.append(
                f"{name}: family {expected.families.get(name)} -> {actual.families.get(name)}"
            )
    if problems:
        raise FeatureSkewError("features are not the ones the model was trained on: "
                               + "; ".join(problems))


def feature_code_modules(families=None) -> list[ModuleType]:
    """The modules whose source determines feature values: the core, each family module, and
    every ``features.*`` module a family module uses (so shared helpers count too)."""
    names = set(CORE_MODULES)
    todo = [f.compute.__module__ for f in select_families(families)]
    while todo:
        name = todo.pop()
        if name in names or not name.startswith("features."):
            continue
        names.add(name)
        for value in vars(sys.modules[name]).values():
            if isinstance(value, ModuleType):
                todo.append(value.__name__)
            elif isinstance(getattr(value, "__module__", None), str):
                todo.append(value.__module__)
    return [sys.modules[n] for n in sorted(names)]


def code_hash(families=None) -> str:
    """sha256 over the source files of feature_code_modules (name and bytes of each, sorted)."""
    digest = hashlib.sha256()
    for module in feature_code_modules(families):
        digest.update(module.__name__.encode() + b"\0")
        digest.update(Path(module.__file__).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _plain(value):
    """A category level as a JSON value (numpy scalars become Python numbers)."""
    return value.item() if hasattr(value, "item") else value
