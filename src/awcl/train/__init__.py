"""Pretraining engine (Lightning underneath).

API: ``from awcl.train.pretrain import PretrainConfig, pretrain``; ``pretrain(cfg) -> run dir``.
"""
