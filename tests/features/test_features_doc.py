from pathlib import Path

from features.build import FAMILIES
from features.docs import DOC_PATH, main, render_features_markdown


def test_docs_features_md_is_the_rendered_registry():
    assert DOC_PATH == Path(__file__).resolve().parents[2] / "docs" / "features.md"
    assert DOC_PATH.read_text(encoding="utf-8") == render_features_markdown(), (
        "docs/features.md is stale: run `python -m features.docs`"
    )


def test_every_family_and_feature_is_documented_with_its_fill_rule():
    text = render_features_markdown()
    for family in FAMILIES:
        assert f"## {family.name}\n" in text
        for feature, description in family.features.items():
            fill = f"{family.fill[feature]:g}" if feature in family.fill else "NaN"
            assert f"| `{feature}` | {description.replace('|', chr(92) + '|')} | {fill} |" in text
    assert "`attr_<column>`" in text


def test_main_writes_the_rendered_text(tmp_path):
    target = tmp_path / "features.md"
    assert main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render_features_markdown()
