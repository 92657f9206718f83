"""``awcl embed`` writes features, an index and t-SNE plots."""

from __future__ import annotations

import numpy as np
import pandas as pd

from _synth import make_class_dataset
from awcl.cli import main
from awcl.evaluate import EmbedConfig, embed


def test_embed_writes_features_and_tsne(tmp_path):
    d = make_class_dataset(tmp_path / "cls", patients_per_class=3, frames=3)
    out = tmp_path / "emb"
    s = embed(EmbedConfig(data=str(d), out=str(out), color_by=["scan"], tsne_iter=250))
    feats = np.load(out / "features.npy")
    index = pd.read_csv(out / "index.csv")
    assert feats.shape == (27, 512) and len(index) == 27
    assert (out / "tsne_coarse_label.png").stat().st_size > 1000
    assert (out / "tsne_video_id.png").is_file()
    assert s["plots"] == ["tsne_coarse_label.png", "tsne_video_id.png"]


def test_embed_cli_unknown_column(tmp_path, capsys):
    d = make_class_dataset(tmp_path / "cls", patients_per_class=2, frames=2)
    rc = main(["embed", "--data", str(d), "--out", str(tmp_path / "e"), "--color-by", "nope"])
    assert rc == 2 and "no such manifest column" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
