"""``key: null`` (``extra:`` with nothing after it) on a mapping, list or nested-config field
that does not take None means the field's default; on a scalar (``init``, ``epochs``) or a
required field it stays an error, so a typo never silently becomes, say, random init."""

from __future__ import annotations

import pytest

import awcl  # noqa: F401  (torchvision shim)
from awcl.config import compose
from awcl.errors import AwclError
from awcl.evaluate.config import FinetuneConfig
from awcl.study.config import parse_config
from awcl.train.config import PretrainConfig


def _raw(**top):
    task = {"name": "cls", "dataset": "pretrain", "train_patients": None, "extra": None, "classes": None}
    return {"pretrain_data": {"recipe": "phantom", "params": None}, "methods": ["random", "simclr"],
            "tasks": [task], "pretrain": {"extra": None}, **top}  # fmt: skip


def test_null_takes_the_default():
    cfg = parse_config(_raw(seeds=None, inits=None, anatomy_ratios=None), "s.yaml")
    assert cfg.seeds == [0] and cfg.inits == {} and cfg.anatomy_ratios == [0.5]
    assert cfg.pretrain.extra == {} and cfg.pretrain_data.params == {}
    t = cfg.tasks[0]
    assert t.train_patients == [None] and t.extra == {}


def test_null_on_a_required_field_is_still_an_error():
    with pytest.raises(AwclError, match=r"^s\.yaml: methods: "):
        parse_config(_raw(methods=None), "s.yaml")


def test_an_init_with_nothing_under_it_names_what_it_lacks():
    with pytest.raises(AwclError, match=r"^s\.yaml: inits\.a\.(backbone|weights): missing"):
        parse_config(_raw(inits={"a": None}), "s.yaml")


@pytest.mark.parametrize("top, match", [
    ({"pretrain": {"epochs": None}}, r"pretrain\.epochs"),
    ({"embed": {"enabled": None}}, r"embed\.enabled"),
])  # fmt: skip
def test_a_scalar_null_is_an_error_not_the_default(top, match):
    with pytest.raises(AwclError, match=rf"^s\.yaml: {match}"):
        parse_config(_raw(**top), "s.yaml")


@pytest.mark.parametrize("schema, item", [(FinetuneConfig, "init=null"), (FinetuneConfig, "folds="),
                                          (PretrainConfig, "epochs=")])  # fmt: skip
def test_a_set_without_a_value_is_an_error(schema, item):
    with pytest.raises(AwclError, match=item.split("=")[0]):
        compose(schema, [("defaults", {"data": "d", "out": "o"})], [item])
