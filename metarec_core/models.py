"""The preference estimator: item IDs and features, user features and an adaptable user state, an MLP head."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from metarec_core.dataset import Dataset
from metarec_core.features import EncodedFeatures, FeatureEncoder

#: What :func:`metarec_core.meta.adapt` may adapt, by scope name.
#: ``dense`` = the user state, the head and the feature-to-factor projections (no embedding tables).
ADAPT_SCOPES = ("user", "head", "user+head", "dense")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and switches of :class:`PreferenceModel` (data-independent).

    Parameters
    ----------
    factor_dim
        Size of the taste vector of a user and the factor vector of an item.
    feature_dim
        Size of each side-feature embedding (and of the projected text vector).
    hidden
        Widths of the MLP head's hidden layers.
    use_item_ids
        Learn an ID factor and bias per item with interactions (what warm data teaches about items).
    use_user_ids
        Learn an ID factor and bias per warm user (used on warm users only).
    init_std
        Standard deviation of the initial ID factors.
    item_id_dropout
        While training, the share of item occurrences whose ID factor and bias
        are hidden, so the feature and text pathways learn to score items on
        their own (what brand-new items rely on; as in DropoutNet).
    """

    factor_dim: int = 32
    feature_dim: int = 8
    hidden: tuple[int, ...] = (32,)
    use_item_ids: bool = True
    use_user_ids: bool = True
    init_std: float = 0.05
    item_id_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.item_id_dropout < 1.0:
            raise ValueError("item_id_dropout must be in [0, 1)")
        if self.factor_dim < 1 or self.feature_dim < 1:
            raise ValueError("factor_dim and feature_dim must be at least 1")
        if any(int(h) < 1 for h in self.hidden):
            raise ValueError("hidden widths must be at least 1")


@dataclass(frozen=True)
class ModelShape:
    """Data-dependent sizes of a model: entity counts and feature vocabularies."""

    n_users: int
    n_items: int
    user_categorical: tuple[int, ...] = ()
    user_multilabel: tuple[int, ...] = ()
    user_numeric: int = 0
    item_categorical: tuple[int, ...] = ()
    item_multilabel: tuple[int, ...] = ()
    item_numeric: int = 0
    text_dim: int = 0
    global_mean: float = 0.0


@dataclass(frozen=True)
class EntityTensors:
    """Side features of every user (or item) as tensors, row ``i`` = index ``i``."""

    categorical: torch.Tensor
    multilabel: tuple[torch.Tensor, ...]
    numeric: torch.Tensor
    text: torch.Tensor | None = None

    @classmethod
    def from_encoded(
        cls, encoded: EncodedFeatures, text: np.ndarray | None = None, device: torch.device | str = "cpu"
    ) -> "EntityTensors":
        """Tensors from :class:`EncodedFeatures` (and an optional text matrix)."""
        return cls(
            categorical=torch.as_tensor(encoded.categorical, dtype=torch.long, device=device),
            multilabel=tuple(torch.as_tensor(m, dtype=torch.long, device=device) for m in encoded.multilabel),
            numeric=torch.as_tensor(encoded.numeric, dtype=torch.float32, device=device),
            text=None if text is None else torch.as_tensor(text, dtype=torch.float32, device=device),
        )

    def to(self, device: torch.device | str) -> "EntityTensors":
        """The same tensors on ``device``."""
        return EntityTensors(
            self.categorical.to(device),
            tuple(m.to(device) for m in self.multilabel),
            self.numeric.to(device),
            None if self.text is None else self.text.to(device),
        )

    def extended(self, n_new: int) -> "EntityTensors":
        """Append ``n_new`` rows with every feature missing (for brand-new entities)."""
        if n_new <= 0:
            return self

        def pad(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t, t.new_zeros((n_new,) + tuple(t.shape[1:]))])

        return EntityTensors(
            pad(self.categorical), tuple(pad(m) for m in self.multilabel), pad(self.numeric),
            None if self.text is None else pad(self.text),
        )


@dataclass(frozen=True)
class FeatureContext:
    """Everything a model needs besides its parameters: users' and items' side features."""

    users: EntityTensors
    items: EntityTensors

    def to(self, device: torch.device | str) -> "FeatureContext":
        """The same context on ``device``."""
        return FeatureContext(self.users.to(device), self.items.to(device))


def shape_for(
    dataset: Dataset,
    user_encoder: FeatureEncoder,
    item_encoder: FeatureEncoder,
    *,
    text_dim: int = 0,
    global_mean: float | None = None,
) -> ModelShape:
    """The :class:`ModelShape` of a dataset under fitted feature encoders."""
    mean = float(dataset.ratings["rating"].mean()) if global_mean is None else float(global_mean)
    return ModelShape(
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        user_categorical=tuple(v.size for v in user_encoder.of_kind("categorical")),
        user_multilabel=tuple(v.size for v in user_encoder.of_kind("multilabel")),
        user_numeric=len(user_encoder.of_kind("numeric")),
        item_categorical=tuple(v.size for v in item_encoder.of_kind("categorical")),
        item_multilabel=tuple(v.size for v in item_encoder.of_kind("multilabel")),
        item_numeric=len(item_encoder.of_kind("numeric")),
        text_dim=int(text_dim),
        global_mean=mean,
    )


class FeatureEmbedder(nn.Module):
    """Embeds one entity kind's side features into one vector per entity.

    Categorical features get an ``nn.Embedding`` each, multi-label features an
    ``nn.EmbeddingBag`` (mean of the labels), numeric features pass through
    (already standardised) and a text vector goes through a trainable linear
    adaptor. The output is their concatenation.
    """

    def __init__(self, categorical: tuple[int, ...], multilabel: tuple[int, ...], numeric: int, text_dim: int, dim: int) -> None:
        super().__init__()
        self.categorical = nn.ModuleList(nn.Embedding(size, dim) for size in categorical)
        self.multilabel = nn.ModuleList(nn.EmbeddingBag(size, dim, mode="mean", padding_idx=0) for size in multilabel)
        self.text_adaptor = nn.Linear(text_dim, dim) if text_dim else None
        self.out_dim = dim * (len(categorical) + len(multilabel) + (1 if text_dim else 0)) + numeric
        for emb in list(self.categorical) + list(self.multilabel):
            nn.init.normal_(emb.weight, std=0.05)

    def forward(self, data: EntityTensors, index: torch.Tensor) -> torch.Tensor:
        """Feature vectors of the entities in ``index`` (any shape) -> ``index.shape + (out_dim,)``."""
        flat = index.reshape(-1)
        parts = [emb(data.categorical[flat, j]) for j, emb in enumerate(self.categorical)]
        parts += [bag(data.multilabel[j][flat]) for j, bag in enumerate(self.multilabel)]
        if data.numeric.shape[1]:
            parts.append(data.numeric[flat])
        if self.text_adaptor is not None:
            if data.text is None:
                raise ValueError("this model expects item text vectors; none were given")
            parts.append(self.text_adaptor(data.text[flat]))
        if not parts:
            return flat.new_zeros(tuple(index.shape) + (0,), dtype=torch.float32)
        return torch.cat(parts, dim=-1).reshape(tuple(index.shape) + (self.out_dim,))


class PreferenceModel(nn.Module):
    """Predicts how much user ``u`` likes item ``i`` (a rating, or a logit on implicit data).

    ``score = mu + b_i + o_u + <t_u, q_i> + head([x_u, x_i, t_u * q_i])`` where

    * ``x_i`` are the item's side features (and projected text), ``q_i`` its
      factor (ID factor learned on warm data, plus a projection of ``x_i`` so
      that new items have one) and ``b_i`` its bias (ID bias plus a feature term);
    * ``x_u`` are the user's side features; ``o_u = user_offset`` and
      ``t_u = user_taste + P x_u`` are the user's offset and taste vector. For
      warm users the learned ID bias and factor are added. ``user_offset`` and
      ``user_taste`` are the meta-learned starting point that
      :func:`metarec_core.meta.adapt` moves per user.

    Parameters adapted per task may carry a leading task dimension ``T``
    (``user_taste`` of shape ``(T, factor_dim)``, head weights ``(T, out, in)``);
    ``forward`` handles both, so one module serves training, adaptation and
    scoring through ``torch.func.functional_call``.
    """

    def __init__(self, shape: ModelShape, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.shape = shape
        self.config = config
        d = config.factor_dim
        self.user_features = FeatureEmbedder(shape.user_categorical, shape.user_multilabel, shape.user_numeric, 0, config.feature_dim)
        self.item_features = FeatureEmbedder(shape.item_categorical, shape.item_multilabel, shape.item_numeric, shape.text_dim, config.feature_dim)
        fu, fi = self.user_features.out_dim, self.item_features.out_dim
        self.global_bias = nn.Parameter(torch.tensor(float(shape.global_mean)))
        self.user_offset = nn.Parameter(torch.zeros(()))
        self.user_taste = nn.Parameter(torch.zeros(d))
        self.item_factor = nn.Embedding(shape.n_items, d)
        self.item_bias = nn.Embedding(shape.n_items, 1)
        self.user_factor = nn.Embedding(shape.n_users, d)
        self.user_bias = nn.Embedding(shape.n_users, 1)
        for emb, std in ((self.item_factor, config.init_std), (self.user_factor, config.init_std), (self.item_bias, 0.0), (self.user_bias, 0.0)):
            nn.init.normal_(emb.weight, std=std) if std else nn.init.zeros_(emb.weight)
        self.user_feature_taste = nn.Linear(fu, d, bias=False) if fu else None
        self.item_feature_factor = nn.Linear(fi, d, bias=False) if fi else None
        self.item_feature_bias = nn.Linear(fi, 1, bias=False) if fi else None
        widths = (fu + fi + d,) + tuple(int(h) for h in config.hidden) + (1,)
        self.head = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        # Which IDs were seen in training: ID parameters of the others stay unused (cold entities).
        self.register_buffer("item_known", torch.zeros(shape.n_items, dtype=torch.bool))
        self.register_buffer("user_known", torch.zeros(shape.n_users, dtype=torch.bool))

    def forward(self, users: torch.Tensor, items: torch.Tensor, context: FeatureContext, warm: bool = False) -> torch.Tensor:
        """Scores of ``items`` ``(T, N)`` for ``users`` ``(T,)`` -> ``(T, N)``.

        ``warm`` adds the users' learned ID bias and factor (known users only).
        """
        x_user = self.user_features(context.users, users)  # (T, Fu)
        taste, offset = self.user_vectors(users, x_user, warm=warm)
        if not self.training and items.numel() > self.item_known.shape[0] and self.head[0].weight.dim() == 2:  # many rows per item
            hidden, dot, b_item = self._first_layer_from_item_table(items, context, x_user, taste)
            layers = self.head[1:]
        else:
            x_item = self.item_features(context.items, items)  # (T, N, Fi)
            q, b_item = self.item_vectors(items, x_item)
            interaction = taste.unsqueeze(1) * q  # (T, N, d)
            hidden = torch.cat([x_user.unsqueeze(1).expand(-1, items.shape[1], -1), x_item, interaction], dim=-1)
            dot = interaction.sum(-1)
            layers = self.head
        for layer in layers:
            hidden = batched_linear(hidden, layer.weight, layer.bias)
            if layer is not self.head[-1]:
                hidden = torch.relu(hidden)
        return self.global_bias + b_item + offset.unsqueeze(1) + dot + hidden.squeeze(-1)

    def _first_layer_from_item_table(
        self, items: torch.Tensor, context: FeatureContext, x_user: torch.Tensor, taste: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward``'s head after its first layer, ``<t_u, q_i>`` and ``b_i``, for many rows per item (whole catalogues).

        The item side (features, factor, bias and the item block of the first
        layer) is computed once per item and gathered per row, and the first
        layer is split by input block, so that no ``(T, N, Fu + Fi + d)`` input
        is built. When every row is the whole catalogue in order it is
        broadcast instead of gathered, and ``(t * q) Wᵀ`` is computed as
        ``q (t Wᵀ)`` with no ``(T, N, d)`` product. Same numbers as the per-row
        path up to float rounding; for a head whose weights are shared by the tasks.
        """
        first = self.head[0]
        every = torch.arange(self.item_known.shape[0], device=items.device)
        x_every = self.item_features(context.items, every)
        q_every, b_every = self.item_vectors(every, x_every)
        fu, fi = x_user.shape[-1], x_every.shape[-1]
        item_part = x_every @ first.weight[:, fu:fu + fi].T  # (n_items, H)
        user_part = (x_user @ first.weight[:, :fu].T + first.bias).unsqueeze(1)  # (T, 1, H)
        interaction_weight = first.weight[:, fu + fi:].T  # (d, H)
        if items.shape[-1] == len(every) and torch.equal(items, every.expand_as(items)):
            hidden = q_every @ (taste.unsqueeze(-1) * interaction_weight) + item_part + user_part
            dot, b_item = taste @ q_every.T, b_every  # (T, N), (N,)
        else:
            q, b_item = q_every[items], b_every[items]
            interaction = taste.unsqueeze(1) * q  # (T, N, d)
            hidden = item_part[items] + user_part + interaction @ interaction_weight
            dot = interaction.sum(-1)
        return (torch.relu(hidden) if len(self.head) > 1 else hidden), dot, b_item

    def user_vectors(
        self, users: torch.Tensor, x_user: torch.Tensor, *, warm: bool = False, params: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each user's taste vector ``t_u`` ``(T, d)`` and offset ``o_u`` ``(T,)``: the user's point in the item-factor space.

        ``t_u = user_taste + W·x_u (+ user_factor_u for a known user when warm)``,
        ``o_u = user_offset (+ user_bias_u likewise)``. ``params`` overrides the
        module's own tensors by name (adapted parameters, possibly with a
        leading task dimension); ``forward`` uses this with none, so scoring and
        the recommender's embedding plots cannot drift apart.
        """
        params = params or {}
        taste = params.get("user_taste", self.user_taste)
        taste = taste.expand(users.shape[0], -1) if taste.dim() == 1 else taste  # (T, d)
        offset = params.get("user_offset", self.user_offset)
        offset = offset.expand(users.shape[0]) if offset.dim() == 0 else offset  # (T,)
        if self.user_feature_taste is not None:
            weight = params.get("user_feature_taste.weight", self.user_feature_taste.weight)
            taste = taste + batched_linear(x_user.unsqueeze(1), weight, None).squeeze(1)
        if warm and self.config.use_user_ids:
            known_user = self.user_known[users].to(x_user.dtype)
            taste = taste + self.user_factor(users) * known_user.unsqueeze(-1)
            offset = offset + self.user_bias(users).squeeze(-1) * known_user
        return taste, offset

    def item_vectors(self, items: torch.Tensor, x_item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each item's factor ``q_i`` ``(..., d)`` and bias ``b_i``: ID parameters of known items plus the feature projections."""
        q = x_item.new_zeros(items.shape + (self.config.factor_dim,))
        b_item = x_item.new_zeros(items.shape)
        if self.config.use_item_ids:
            known_item = self.item_known[items].unsqueeze(-1).to(x_item.dtype)
            if self.training and self.config.item_id_dropout > 0:
                known_item = known_item * (torch.rand(known_item.shape, device=known_item.device) >= self.config.item_id_dropout).to(known_item.dtype)
            q = q + self.item_factor(items) * known_item
            b_item = b_item + self.item_bias(items).squeeze(-1) * known_item.squeeze(-1)
        if self.item_feature_factor is not None:
            q = q + batched_linear(x_item, self.item_feature_factor.weight, None)
            b_item = b_item + batched_linear(x_item, self.item_feature_bias.weight, None).squeeze(-1)
        return q, b_item

    def scope_names(self, scope: str) -> tuple[str, ...]:
        """Names of the parameters that ``scope`` adapts (see :data:`ADAPT_SCOPES`)."""
        if scope not in ADAPT_SCOPES:
            raise ValueError(f"adapt scope must be one of {ADAPT_SCOPES}, got '{scope}'")
        user = ("user_offset", "user_taste")
        head = tuple(n for n, _ in self.head.named_parameters(prefix="head"))
        if scope == "user":
            return user
        if scope == "head":
            return head
        if scope == "user+head":
            return user + head
        projections = tuple(
            f"{name}.weight"
            for name in ("user_feature_taste", "item_feature_factor", "item_feature_bias")
            if getattr(self, name) is not None
        )
        return user + head + projections

    def mark_known(self, users: np.ndarray, items: np.ndarray) -> None:
        """Record which users and items had training interactions (their ID parameters are used)."""
        self.user_known[torch.as_tensor(np.unique(users), dtype=torch.long, device=self.user_known.device)] = True
        self.item_known[torch.as_tensor(np.unique(items), dtype=torch.long, device=self.item_known.device)] = True


def batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` where weight and bias may carry a leading task dimension.

    ``x`` is ``(T, N, in)``; ``weight`` is ``(out, in)`` or ``(T, out, in)``;
    ``bias`` is ``(out,)`` or ``(T, out)``.
    """
    out = torch.matmul(x, weight.transpose(-1, -2))
    if bias is not None:
        out = out + (bias.unsqueeze(-2) if bias.dim() == 2 else bias)
    return out
