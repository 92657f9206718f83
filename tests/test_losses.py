"""The masked contrastive loss against a plain per-anchor loop written from Eq. 1-3."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from awcl.losses import contrastive_loss, masked_contrastive_loss, positive_mask


def reference_loss(z: torch.Tensor, pair: list[int], key: list[int] | None, tau: float) -> float:
    """Eq. 3 per anchor: Eq. 2 over A(i) if non-empty, else Eq. 1 with the partner view(s)."""
    z = F.normalize(z.double(), dim=1)
    m = z.shape[0]
    losses = []
    for i in range(m):
        sims = [float(z[i] @ z[k]) / tau for k in range(m)]
        denom = sum(math.exp(sims[k]) for k in range(m) if k != i)
        a_set = [] if key is None or key[i] < 0 else [j for j in range(m) if j != i and key[j] == key[i]]
        if a_set:  # Eq. 2
            li = -sum(math.log(math.exp(sims[a]) / denom) for a in a_set) / len(a_set)
        else:  # Eq. 1 (the partner view)
            partners = [j for j in range(m) if j != i and pair[j] == pair[i]]
            if not partners:
                continue
            li = -sum(math.log(math.exp(sims[j]) / denom) for j in partners) / len(partners)
        losses.append(li)
    return sum(losses) / len(losses)


def _case(n: int, keys: list[int] | None, seed: int = 0, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * n, d, generator=g)
    pair = list(range(n)) * 2
    key = None if keys is None else list(keys) * 2  # both views carry the sample's key
    return z, pair, key


CASES = {
    "all_unlabelled": [-1] * 6,
    "no_keys": None,
    "one_class": [3] * 5,
    "class_appears_once": [0, -1, 1, 1, -1, 2],
    "mixed": [0, 0, -1, 1, -1, 1, 0, -1],
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_matches_reference(name: str, tau: float) -> None:
    keys = CASES[name]
    n = 6 if keys is None else len(keys)
    z, pair, key = _case(n, keys, seed=len(name))
    got = contrastive_loss(
        z, torch.tensor(pair), None if key is None else torch.tensor(key), temperature=tau
    )
    want = reference_loss(z, pair, key, tau)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_partner_with_other_key_falls_back_to_eq1() -> None:
    """An anchor whose only same-key view is itself (its partner unlabelled) uses Eq. 1."""
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    pair = [0, 1, 2, 0, 1, 2]
    key = [5, -1, 7, -1, -1, 7]  # anchor 0 has key 5 that appears once; its partner is view 3
    pos = positive_mask(torch.tensor(pair), torch.tensor(key))
    assert pos[0].nonzero().flatten().tolist() == [3]
    # unlabelled anchors never become positives of each other (the public-code pitfall)
    assert pos[1].nonzero().flatten().tolist() == [4]
    assert pos[2].nonzero().flatten().tolist() == [5]
    got = contrastive_loss(z, torch.tensor(pair), torch.tensor(key))
    assert got.item() == pytest.approx(reference_loss(z, pair, key, 0.5), rel=1e-5)


def test_anchor_subset_sums_to_full_mean() -> None:
    """Per-process anchors (DDP): the mean of the per-part means equals the full mean."""
    z, pair, key = _case(8, [0, 0, -1, 1, -1, 1, 0, -1], seed=5)
    pos = positive_mask(torch.tensor(pair), torch.tensor(key))
    full = masked_contrastive_loss(z, pos)
    halves = [masked_contrastive_loss(z, pos, anchors=torch.arange(s, s + 8)) for s in (0, 8)]
    assert ((halves[0] + halves[1]) / 2).item() == pytest.approx(full.item(), rel=1e-6)


def test_bf16_inputs_and_gradient_finite() -> None:
    z, pair, key = _case(8, [0, 0, -1, 1, -1, 1, 0, -1], seed=9)
    zb = z.to(torch.bfloat16).requires_grad_(True)
    loss = contrastive_loss(zb, torch.tensor(pair), torch.tensor(key))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(zb.grad.float()).all()
    want = reference_loss(z.to(torch.bfloat16).float(), pair, key, 0.5)
    assert loss.item() == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_finite_and_matches_autograd_of_reference(name: str) -> None:
    keys = CASES[name]
    n = 6 if keys is None else len(keys)
    z, pair, key = _case(n, keys, seed=11)
    z64 = z.double().requires_grad_(True)
    loss = contrastive_loss(
        z64, torch.tensor(pair), None if key is None else torch.tensor(key)
    )
    loss.backward()
    assert torch.isfinite(z64.grad).all()
    # finite-difference check of one coordinate against the reference loop
    eps = 1e-6
    zp, zm = z.double().clone(), z.double().clone()
    zp[1, 2] += eps
    zm[1, 2] -= eps
    fd = (reference_loss(zp, pair, key, 0.5) - reference_loss(zm, pair, key, 0.5)) / (2 * eps)
    assert z64.grad[1, 2].item() == pytest.approx(fd, rel=1e-4, abs=1e-7)


def test_extreme_similarity_no_nan() -> None:
    """Identical embeddings at a tiny temperature: large logits, still finite."""
    z = torch.ones(8, 4, requires_grad=True)
    loss = contrastive_loss(z, torch.arange(4).repeat(2), torch.tensor([0, 0, -1, 1] * 2), 0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_fp32_inside_autocast() -> None:
    """Under bf16 autocast (the CPU engine) the similarities must still be computed in fp32."""
    z, pair, key = _case(8, [0, 0, -1, 1, -1, 1, 0, -1], seed=13)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = contrastive_loss(z, torch.tensor(pair), torch.tensor(key))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(reference_loss(z, pair, key, 0.5), rel=1e-5)
