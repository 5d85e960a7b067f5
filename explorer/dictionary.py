"""Dictionaries of directions over feature vectors: fitting them (NMF, Semi-NMF, a TopK SAE) and coding with them.

A :class:`Dictionary` holds ``basis``, ``(n_concepts, C)``: feature vectors ``A`` (``(N, C)``) are approximated
as ``codes @ basis`` with non-negative ``codes``. How the codes are found depends on the method:

- ``"nmf"`` (non-negative features and basis): fitted by scikit-learn's :class:`~sklearn.decomposition.MiniBatchNMF`;
- ``"semi-nmf"`` (signed features and basis, non-negative codes; Ding, Li and Jordan, "Convex and
  Semi-Nonnegative Matrix Factorizations", 2010): alternating least squares, the basis in closed form as in
  their paper, the codes by warm-started non-negative least squares instead of their multiplicative update
  (which took about 3x longer to the same error on 30k x 320 features), from scikit-learn's k-means++ seeds;
- for both, the codes of any vectors are the non-negative least-squares solution (:func:`nnls_codes`, accelerated
  projected gradient with a fixed number of steps, so a vector's codes never depend on the other vectors);
- ``"topk-sae"``: a TopK sparse autoencoder (Gao et al., "Scaling and evaluating sparse autoencoders", 2024):
  ``codes = TopK(ReLU(A @ encoder + encoder_bias))``, ``A ≈ codes @ basis`` (no decoder bias, so a concept is a
  direction from the origin as in the NMFs); trained with Adam on unit-norm directions.

Overcomplete (the library gathering these for vision) is not used: its wheel (0.3.0 on PyPI) requires
``opencv-python`` (and torchvision, einops, matplotlib), which clobbers the ``opencv-python-headless`` that
grad-cam's extra installs (both own the ``cv2`` package), and ``import overcomplete`` loads its whole model zoo
and plotting stack. The algorithms are short; they are here.

Example::

    >>> vectors = maps["blocks.4"][0].flatten(1).T          # (196, 112): every location of the cat's map
    >>> d = fit_dictionary(vectors, n_concepts=8, method="semi-nmf", seed=0)
    >>> d.basis.shape, d.codes(vectors).shape
    (torch.Size([8, 112]), torch.Size([196, 8]))
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ._args import shown
from .errors import InvalidArgumentError, MissingDependencyError
from .vocabulary import CONCEPT_METHODS

__all__ = ["METHODS", "NNLS_STEPS", "Dictionary", "fit_dictionary", "nnls_codes", "require"]

METHODS = CONCEPT_METHODS
"""The values ``method=`` takes."""

NNLS_STEPS = 200
"""Projected-gradient steps of :func:`nnls_codes`."""

_SEMI_NMF_STEPS = 200
_SEMI_NMF_INNER = 10
_SEMI_NMF_TOL = 1e-4
"""Semi-NMF stops once a round gains less than this share of ``||A||^2``. On 100k x 320 features of the default's
``blocks.6`` (32 concepts) 1e-4 stops after 20 rounds (4.0 s of CPU) where 1e-5 took 42 (8.4 s) for a relative
error of 0.6047 against 0.6043 (``benchmarks/concepts.py``)."""
_SEED_ROWS = 20_000
_SAE_STEPS = 1000
_SAE_BATCH = 512
_SAE_RATE = 3e-3


def nnls_codes(
    vectors: torch.Tensor,
    basis: torch.Tensor,
    steps: int = NNLS_STEPS,
    start: torch.Tensor | None = None,
    products: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Non-negative codes ``Z`` (``(N, K)``) minimising ``||vectors - Z @ basis||`` row by row (FISTA).

    Every row is solved on its own (the same steps whatever else is in the batch), from zero (or ``start``), for
    ``steps`` accelerated projected-gradient steps of size ``1 / ||basis @ basis.T||``; ``products`` passes
    ``(basis @ basis.T, vectors @ basis.T)`` when they are at hand.
    """
    basis = basis.to(vectors.device, torch.float32)
    gram, target = products if products is not None else (basis @ basis.T, vectors.float() @ basis.T)
    step = 1.0 / float(torch.linalg.eigvalsh(gram.double()).max().clamp_min(1e-12))
    codes = torch.zeros_like(target) if start is None else start
    ahead, momentum = codes, 1.0
    for _ in range(steps):
        following = (ahead - step * (ahead @ gram - target)).clamp_min_(0)
        next_momentum = (1 + math.sqrt(1 + 4 * momentum * momentum)) / 2
        ahead = following + ((momentum - 1) / next_momentum) * (following - codes)
        codes, momentum = following, next_momentum
    return codes


@dataclass
class Dictionary:
    """A fitted dictionary; see the module docs.

    Attributes:
        method: one of :data:`METHODS`.
        basis: ``(n_concepts, C)`` float32: the directions.
        extra: the TopK SAE's ``encoder`` (``(C, n)``), ``encoder_bias`` (``(n,)``) and
            ``active`` (codes kept per vector, a 0-d tensor); empty for the NMFs.
    """

    method: str
    basis: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor by name (for saving: contiguous, as safetensors requires)."""
        return {name: tensor.contiguous() for name, tensor in {"basis": self.basis, **self.extra}.items()}

    @classmethod
    def from_tensors(cls, method: str, tensors: dict[str, torch.Tensor]) -> Dictionary:
        """The dictionary that :meth:`tensors` described."""
        extra = {name: tensor for name, tensor in tensors.items() if name != "basis"}
        return cls(method, tensors["basis"], extra)

    @property
    def digest(self) -> str:
        """SHA-256 of the method and every tensor: what the codes depend on."""
        digest = hashlib.sha256(self.method.encode())
        for name, tensor in sorted(self.tensors().items()):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def codes(self, vectors: torch.Tensor) -> torch.Tensor:
        """``(N, n_concepts)`` non-negative codes of ``(N, C)`` vectors, on their device."""
        if self.method != "topk-sae":
            return nnls_codes(vectors, self.basis)
        device = vectors.device
        pre = vectors.float() @ self.extra["encoder"].to(device) + self.extra["encoder_bias"].to(device)
        pre = pre.relu_()
        kept = torch.topk(pre, int(self.extra["active"]), dim=1)
        return torch.zeros_like(pre).scatter_(1, kept.indices, kept.values)

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` vectors from ``(N, n_concepts)`` codes."""
        return codes @ self.basis.to(codes.device)


def require(method: str) -> None:
    """Raise :class:`~explorer.InvalidArgumentError` for an unknown method, or
    :class:`~explorer.MissingDependencyError` when scikit-learn (which every method uses) is missing."""
    if not isinstance(method, str) or method not in METHODS:
        raise InvalidArgumentError(f"method={shown(method)}; choose one of: {', '.join(METHODS)}.")
    try:
        import sklearn  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            f'method="{method}" needs scikit-learn: pip install "explorer[concepts]" (or pip install scikit-learn).'
        ) from err


def _nmf(vectors: torch.Tensor, n_concepts: int, seed: int) -> Dictionary:
    from sklearn.decomposition import MiniBatchNMF

    model = MiniBatchNMF(n_concepts, init="nndsvda", batch_size=2048, max_iter=200, random_state=seed)
    model.fit(vectors.numpy())
    return Dictionary("nmf", torch.from_numpy(model.components_.astype(np.float32)))


def _seeds(vectors: torch.Tensor, n_concepts: int, seed: int) -> torch.Tensor:
    """``(n_concepts, C)`` unit directions: scikit-learn's k-means++ seeds among the directions of (at most
    :data:`_SEED_ROWS`) samples, so that no direction starts far from the data."""
    from sklearn.cluster import kmeans_plusplus

    generator = torch.Generator().manual_seed(seed)
    rows = vectors[torch.randperm(len(vectors), generator=generator)[:_SEED_ROWS]]
    unit = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    seeds, _ = kmeans_plusplus(unit.numpy(), n_concepts, random_state=seed)
    return torch.from_numpy(seeds).float()


def _semi_nmf(vectors: torch.Tensor, n_concepts: int, seed: int) -> Dictionary:
    a = vectors.float()
    basis = _seeds(a, n_concepts, seed)
    codes = torch.zeros(len(a), n_concepts)
    eye, energy, previous = torch.eye(n_concepts) * 1e-6, float(a.pow(2).sum()), math.inf
    for _ in range(_SEMI_NMF_STEPS):
        # the codes: non-negative least squares, warm-started; then the free basis: least squares
        gram, target = basis @ basis.T, a @ basis.T
        codes = nnls_codes(a, basis, _SEMI_NMF_INNER, start=codes, products=(gram, target))
        basis = torch.linalg.solve(codes.T @ codes + eye, codes.T @ a)
        # ||A - Z D||^2 from the products at hand; stop once a round gains less than _SEMI_NMF_TOL of ||A||^2
        gram, cross = basis @ basis.T, codes.T @ a
        loss = energy - 2 * float((cross * basis).sum()) + float(((codes.T @ codes) * gram).sum())
        if previous - loss < _SEMI_NMF_TOL * energy:
            break
        previous = loss
    return Dictionary("semi-nmf", basis.contiguous())


def _topk_sae(vectors: torch.Tensor, n_concepts: int, seed: int, active: int) -> Dictionary:
    generator = torch.Generator().manual_seed(seed)
    scale = float(vectors.pow(2).sum(1).mean().sqrt().clamp_min(1e-12))
    a = vectors / scale  # unit mean norm, so one learning rate fits every stage
    basis = _seeds(a, n_concepts, seed) + 1e-3 * torch.randn(n_concepts, a.shape[1], generator=generator)
    basis = torch.nn.Parameter(basis / basis.norm(dim=1, keepdim=True))
    encoder = torch.nn.Parameter(basis.detach().T.clone())
    encoder_bias = torch.nn.Parameter(torch.zeros(n_concepts))
    optimiser = torch.optim.Adam([basis, encoder, encoder_bias], lr=_SAE_RATE)
    for _ in range(_SAE_STEPS):
        batch = a[torch.randint(len(a), (_SAE_BATCH,), generator=generator)]
        pre = (batch @ encoder + encoder_bias).relu()
        kept = torch.topk(pre, active, dim=1)
        codes = torch.zeros_like(pre).scatter(1, kept.indices, kept.values)
        loss = (codes @ basis - batch).pow(2).sum(1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():  # unit-norm directions: the codes carry the magnitude
            basis /= basis.norm(dim=1, keepdim=True).clamp_min(1e-12)
    extra = {
        "encoder": encoder.detach() / scale,
        "encoder_bias": encoder_bias.detach(),
        "active": torch.tensor(active),
    }
    return Dictionary("topk-sae", (basis.detach() * scale).contiguous(), extra)


def fit_dictionary(
    vectors: torch.Tensor, n_concepts: int, method: str = "nmf", seed: int = 0, active: int | None = None
) -> Dictionary:
    """Fit a dictionary of ``n_concepts`` directions to ``(N, C)`` feature vectors (CPU, deterministic per seed).

    Args:
        vectors: the samples, float32 on the CPU; non-negative for ``"nmf"``.
        n_concepts: directions to learn.
        method: ``"nmf"``, ``"semi-nmf"`` or ``"topk-sae"``.
        seed: seeds scikit-learn's and torch's random choices.
        active: ``"topk-sae"`` only: codes kept per vector (default ``max(1, n_concepts // 8)``).

    Example::

        >>> fit_dictionary(torch.rand(1000, 16), 4, "nmf").basis.shape
        torch.Size([4, 16])
    """
    require(method)
    vectors = vectors.detach().cpu().float()
    if method == "nmf":
        return _nmf(vectors, n_concepts, seed)
    if method == "semi-nmf":
        return _semi_nmf(vectors, n_concepts, seed)
    active = max(1, n_concepts // 8) if active is None else active
    if isinstance(active, bool) or not isinstance(active, int) or not 1 <= active <= n_concepts:
        raise InvalidArgumentError(f"active={active!r}; pass an integer from 1 to n_concepts ({n_concepts}).")
    return _topk_sae(vectors, n_concepts, seed, active)
