"""The baseline's model and losses (torch; imported only by ``ropebench.baseline.train``).

A COPE-style setup reduced to what the ablation needs:

- ``Encoders``: one small MLP per domain, all mapping into one shared, L2-normalised space
  (128-d by default, COPE's size).
- ``CosFaceHead``: classification over training products with a cosine softmax and an additive
  margin (CosFace). It keeps *one weight matrix per domain*: the P encoder is trained against P
  class centres, the V encoder against V class centres, and nothing asks a P centre and a V
  centre of the same product to coincide. Each domain therefore learns its own arrangement of
  products — good for intra-domain retrieval, near chance across domains. This is the reading of
  the paper's finding (P2P R@1 90.81 but P2V 3.77 without L_cd) that the baseline implements;
  a single shared classifier would already tie the domains together through the class weights.
- ``cross_domain_infonce``: L_cd, the InfoNCE loss between items of the same product in
  different domains within a batch (temperature 0.05, as in the released COPE code). It is the
  only term that relates the domains, and adding it is what unifies the space.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ropebench.protocol import DOMAINS

__all__ = ["Encoders", "CosFaceHead", "cross_domain_infonce"]


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    # PyTorch's default Linear init, but drawn from an explicit generator (no global seeding).
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)


class Encoders(nn.Module):
    """Per-domain MLP encoders into one shared, L2-normalised space.

    Inputs are standardised with per-domain train statistics (buffers ``mean``/``std``), then
    ``Linear(in, hidden) → GELU → Linear(hidden, hidden) → GELU → Linear(hidden, dim)``.

    Args:
        in_dim: feature size of every domain.
        dim: embedding size.
        hidden: hidden width.
        stats: ``{domain: (mean, std)}`` float32 tensors of shape ``(in_dim,)``.
        generator: source of the initial weights.
    """

    def __init__(self, in_dim: int, dim: int, hidden: int,
                 stats: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 generator: torch.Generator) -> None:
        super().__init__()
        self.mlps = nn.ModuleDict()
        for domain in DOMAINS:
            mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(),
                                nn.Linear(hidden, hidden), nn.GELU(),
                                nn.Linear(hidden, dim))
            for layer in mlp:
                if isinstance(layer, nn.Linear):
                    _init_linear(layer, generator)
            self.mlps[domain] = mlp
            mean, std = stats[domain]
            self.register_buffer(f"mean_{domain}", mean.clone())
            self.register_buffer(f"std_{domain}", std.clone())

    def forward(self, features: torch.Tensor, domain: str) -> torch.Tensor:
        """``(n, in_dim)`` features of one domain -> ``(n, dim)`` unit-norm embeddings."""
        x = (features - getattr(self, f"mean_{domain}")) / getattr(self, f"std_{domain}")
        return F.normalize(self.mlps[domain](x), dim=1)


class CosFaceHead(nn.Module):
    """CosFace classification with one classifier weight matrix per domain.

    ``loss = CE(s · (cos θ_y − m), y)`` with ``cos θ_j = <e, w_j> / |w_j|`` over the training
    products, ``w`` taken from the item's own domain (see the module docstring for why).

    Args:
        dim: embedding size.
        classes: number of training products.
        scale: ``s``. margin: ``m``.
    """

    def __init__(self, dim: int, classes: int, generator: torch.Generator, *,
                 scale: float = 30.0, margin: float = 0.2) -> None:
        super().__init__()
        self.scale, self.margin = scale, margin
        self.weights = nn.ParameterDict({
            domain: nn.Parameter(torch.randn(classes, dim, generator=generator))
            for domain in DOMAINS
        })

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, domain: str) -> torch.Tensor:
        """Summed (not averaged) loss of ``(n, dim)`` unit embeddings of one domain."""
        cosine = embeddings @ F.normalize(self.weights[domain], dim=1).T
        margin = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype) * self.margin
        return F.cross_entropy(self.scale * (cosine - margin), labels, reduction="sum")


def cross_domain_infonce(embeddings: torch.Tensor, products: torch.Tensor,
                         domains: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """L_cd: multi-positive InfoNCE across domains within a batch.

    For an anchor ``i`` the candidates are the batch items of the *other* domains; positives are
    those of the same product::

        L_i = −log( Σ_{j∈pos(i)} exp(s_ij/τ) / Σ_{j: d_j≠d_i} exp(s_ij/τ) )

    averaged over anchors with at least one positive (``s`` = cosine, embeddings unit-norm).

    Args:
        embeddings: ``(n, dim)`` unit-norm float32.
        products: ``(n,)`` int64 product labels. domains: ``(n,)`` int64 domain indices.
    """
    logits = embeddings @ embeddings.T / temperature
    other_domain = domains[:, None] != domains[None, :]
    positive = other_domain & (products[:, None] == products[None, :])
    has_positive = positive.any(dim=1)
    neg_inf = torch.finfo(logits.dtype).min
    all_terms = torch.logsumexp(logits.masked_fill(~other_domain, neg_inf), dim=1)
    pos_terms = torch.logsumexp(logits.masked_fill(~positive, neg_inf), dim=1)
    return (all_terms - pos_terms)[has_positive].mean()
