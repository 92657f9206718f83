"""``key: null`` in a study config means the key's default where the field does not take
None (it did before the study config was typed; ``extra:`` with nothing after it is YAML's
null), and stays an error on a required field."""

from __future__ import annotations

import pytest

import awcl  # noqa: F401  (torchvision shim)
from awcl.errors import AwclError
from awcl.study.config import parse_config


def _raw(**top):
    task = {"name": "cls", "dataset": "pretrain", "train_patients": None, "extra": None, "classes": None}
    return {"pretrain_data": {"recipe": "phantom", "params": None}, "methods": ["random", "simclr"],
            "tasks": [task], "pretrain": {"extra": None}, **top}  # fmt: skip


def test_null_takes_the_default():
    cfg = parse_config(_raw(seeds=None, inits=None, anatomy_ratios=None), "s.yaml")
    assert cfg.seeds == [0] and cfg.inits == {} and cfg.anatomy_ratios == [0.5]
    assert cfg.pretrain.extra == {} and cfg.pretrain_data.params == {}
    t = cfg.tasks[0]
    assert t.train_patients == [None] and t.extra == {} and t.classes is None


def test_null_on_a_required_field_is_still_an_error():
    with pytest.raises(AwclError, match=r"^s\.yaml: methods: "):
        parse_config(_raw(methods=None), "s.yaml")


def test_an_init_with_nothing_under_it_names_what_it_lacks():
    with pytest.raises(AwclError, match=r"^s\.yaml: inits\.a\.(backbone|weights): missing"):
        parse_config(_raw(inits={"a": None}), "s.yaml")
